"""The Kubernetes replica backend, through the real ``lightkube`` client over HTTP against the
in-repo API emulator (``support.k8s_emulator``): no real cluster, no patched client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry

from shipit.backends.base import ReplicaSpec
from shipit.backends.k8s_pods import DEPLOYMENT, MANAGED_BY, POOL, VERSION
from shipit.backends.kubernetes import KubernetesBackend
from shipit.config.k8s_backend import KubernetesBackendConfig
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.services.registry import ReplicaRegistry
from shipit.telemetry.instruments import build_control_plane_metrics
from support.k8s_emulator import K8sEmulator

SPEC = ReplicaSpec("chat", "Qwen/Qwen3-0.6B", extra_args=("--max-num-seqs", "8"))
NODES = ("n1", "n2", "n3", "n4")


async def eventually(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@asynccontextmanager
async def cluster(
    tmp_path: Path, **cfg: object
) -> AsyncIterator[tuple[K8sEmulator, KubernetesBackend, ReplicaRegistry, CollectorRegistry]]:
    emu = K8sEmulator()
    await emu.start()
    for n in NODES:
        emu.add_node(n, {"pool": "gpu"})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(emu.kubeconfig()))
    config = KubernetesBackendConfig.model_validate(
        {"kubeconfig": str(kubeconfig), "node_selector": {"pool": "gpu"}, "cordon_nodes": True}
        | cfg
    )
    registry = ReplicaRegistry("chat", clock=FakeClock(), max_concurrency=8)
    metrics = CollectorRegistry()
    backend = KubernetesBackend(
        config,
        deployment="chat",
        registrars={"chat": registry},
        metrics=build_control_plane_metrics(metrics),
        backoff_s=(0.01, 0.05),
    )
    try:
        yield emu, backend, registry, metrics
    finally:
        await backend.close()
        await emu.close()


async def up(emu: K8sEmulator, backend: KubernetesBackend, registry: ReplicaRegistry, n: int):  # type: ignore[no-untyped-def]
    handles = await backend.start(SPEC, n)
    for h in handles:
        registry.add(h.replica_id, h.url)
    return handles


def test_pod_spec_carries_labels_gpus_and_replica_flags(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path, gpus=2, pool="spot", version="v2") as (emu, backend, _, _m):
            [h] = await backend.start(SPEC, 1)
            pod = emu.pod(h.replica_id)
            labels = pod["metadata"]["labels"]
            assert labels[MANAGED_BY] == "shipit"
            assert (labels[DEPLOYMENT], labels[VERSION], labels[POOL]) == ("chat", "v2", "spot")
            c = pod["spec"]["containers"][0]
            assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
            assert c["command"] == ["shipit", "replica"]
            assert c["args"][:2] == ["--model", "Qwen/Qwen3-0.6B"]
            assert c["args"][-2:] == ["--max-num-seqs", "8"]
            assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
            assert pod["spec"]["restartPolicy"] == "Never"
            assert c["securityContext"]["runAsNonRoot"] is True
            assert pod["spec"]["terminationGracePeriodSeconds"] == 35  # drain 30 s + 5
            assert h.url == f"http://{h.replica_id}.shipit-replicas.default.svc:8000"
            # A rollout's version labels (and names) its pods.
            [c] = await backend.start(dataclasses.replace(SPEC, version="v3"), 1)
            assert emu.pod(c.replica_id)["metadata"]["labels"][VERSION] == "v3"
            assert c.replica_id.startswith("chat-v3-")

    asyncio.run(main())


def test_scale_up_kill_replace_cordon_and_scale_to_zero(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, metrics):
            # Scale up to 3: pods are created, the kubelet brings them up, the watch sees it.
            handles = await up(emu, backend, registry, 3)
            assert len(emu.pods()) == 3
            assert all(registry.get(h.replica_id).state is ReplicaState.STARTING for h in handles)  # type: ignore[union-attr]
            for h in handles:
                emu.run_to_ready(h.replica_id)
            await eventually(
                lambda: all(backend.state(h.replica_id) is ReplicaState.READY for h in handles),
                "3 replicas ready",
            )
            assert all(registry.get(h.replica_id).state is ReplicaState.READY for h in handles)  # type: ignore[union-attr]

            # A pod deleted behind our back (watch DELETED) is no longer alive; replace it.
            victim = handles[0]
            emu.delete_pod(victim.replica_id)
            await eventually(lambda: not backend.alive(victim), "deleted pod seen")
            assert registry.get(victim.replica_id).state is ReplicaState.UNHEALTHY  # type: ignore[union-attr]
            await backend.stop(victim)  # what the lifecycle policy's reap does (404 is fine)
            registry.remove(victim.replica_id)
            [fresh] = await up(emu, backend, registry, 1)
            emu.run_to_ready(fresh.replica_id)
            live = [h for h in backend.list() if backend.alive(h)]
            assert len(live) == 3 and fresh in live and victim not in live

            # Three crashes on n1: the node is cordoned, with an Event and a metric.
            for i in range(3):
                [h] = await up(emu, backend, registry, 1)
                emu.schedule(h.replica_id, "n1")
                emu.start_container(h.replica_id)
                emu.kill(h.replica_id, reason="Error", message=f"exit {i}")
                await eventually(lambda h=h: not backend.alive(h), "crash seen")  # type: ignore[misc]
                await backend.stop(h)
                registry.remove(h.replica_id)
            await eventually(lambda: emu.node("n1")["spec"].get("unschedulable") is True, "cordon")
            assert backend.cordoned == ["n1"]
            [event] = emu.events("ShipitCordoned")
            assert event["involvedObject"] == {"kind": "Node", "name": "n1", "apiVersion": "v1"}
            assert (
                metrics.get_sample_value(
                    "shipit_node_cordons_total",
                    {"deployment": "chat", "reason": "repeated_failures"},
                )
                == 1.0
            )
            # The replacement lands elsewhere.
            [h] = await up(emu, backend, registry, 1)
            assert emu.schedule(h.replica_id) != "n1"

            # An XID-like crash on n2 would cordon it, but 1 of 4 nodes is the configured cap.
            [x] = await up(emu, backend, registry, 1)
            emu.schedule(x.replica_id, "n2")
            emu.kill(
                x.replica_id, reason="Error", message="NVRM: Xid 79, GPU has fallen off the bus"
            )
            await eventually(lambda: not backend.alive(x), "xid crash seen")
            await eventually(
                lambda: backend.node_decisions[-1].reason_code == "cordon_cap_reached", "cap"
            )
            assert backend.node_decisions[-1].held == ("n2",)
            assert not emu.node("n2")["spec"].get("unschedulable")
            await backend.stop(x)  # reaped, as the lifecycle policy does with a dead replica

            # Scale to zero: every pod deleted, nothing left tracked.
            for h in backend.list():
                await backend.stop(h)
            assert emu.pods() == [] and backend.list() == []

    asyncio.run(main())


def test_oom_eviction_and_node_loss_are_failures(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            a, b, c = await up(emu, backend, registry, 3)
            emu.run_to_ready(a.replica_id, "n1")
            emu.run_to_ready(b.replica_id, "n2")
            emu.run_to_ready(c.replica_id, "n3")
            emu.kill(a.replica_id, reason="OOMKilled")
            emu.evict(b.replica_id)
            emu.lose_node("n3")
            await eventually(
                lambda: not any(backend.alive(h) for h in (a, b, c)), "three failures seen"
            )
            assert [backend.failure(h.replica_id) for h in (a, b, c)] == [
                "OOMKilled",
                "Evicted",
                "NodeLost",
            ]

    asyncio.run(main())


def test_api_outage_keeps_replicas_and_the_watch_resumes_from_its_version(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            a, b = await up(emu, backend, registry, 2)
            emu.run_to_ready(a.replica_id)
            emu.run_to_ready(b.replica_id)
            await eventually(lambda: backend.state(b.replica_id) is ReplicaState.READY, "ready")
            emu.outage()
            await eventually(lambda: not backend.connected, "outage noticed")
            # The gateway keeps serving on what it knows.
            assert backend.list() == [a, b] and backend.alive(a) and backend.alive(b)
            assert registry.get(a.replica_id).state is ReplicaState.READY  # type: ignore[union-attr]
            starting = asyncio.create_task(backend.start(SPEC, 1))  # retried with back-off
            emu.kill(a.replica_id, reason="OOMKilled")  # happens while we cannot see
            await asyncio.sleep(0.1)
            assert not starting.done()
            emu.restore()
            [c] = await starting
            assert emu.pod(c.replica_id)["metadata"]["name"] == c.replica_id
            await eventually(lambda: not backend.alive(a), "missed event caught up")
            assert backend.alive(b) and backend.relists == 0
            watches = [p for m, p in emu.requests if "watch=true" in p]
            assert len(watches) >= 2 and "resourceVersion=" in watches[-1]

    asyncio.run(main())


def test_410_gone_relists_and_reconciles(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            a, b = await up(emu, backend, registry, 2)
            await eventually(lambda: backend.state(b.replica_id) is not None, "tracked")
            emu.outage()
            await eventually(lambda: not backend.connected, "outage noticed")
            emu.delete_pod(a.replica_id)  # the DELETED event is compacted away below
            emu.run_to_ready(b.replica_id)
            emu.compact()
            emu.restore()
            await eventually(lambda: backend.relists == 1, "relisted after 410")
            await eventually(lambda: not backend.alive(a), "deletion found by the relist")
            await eventually(lambda: backend.state(b.replica_id) is ReplicaState.READY, "b ready")

    asyncio.run(main())


def test_409_on_cordon_is_reread_and_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, _r, _m):
            await backend.connect()
            emu.on_get[("nodes", "n4")] = 1  # another writer changes n4 right after our read
            await backend.cordon("n4", "hardware_error", "test")
            assert backend.conflicts_retried == 1
            node = emu.node("n4")
            assert node["spec"]["unschedulable"] is True
            assert "emulator/touched" in node["metadata"]["annotations"]  # theirs kept

    asyncio.run(main())


def test_a_restarted_gateway_adopts_running_pods(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            handles = await up(emu, backend, registry, 2)
            for h in handles:
                emu.run_to_ready(h.replica_id)
            emu.put("pods", {"metadata": {"name": "not-ours"}, "spec": {}})
            await backend.close()  # the gateway exits; the pods stay
            again = KubernetesBackend(backend.cfg, backoff_s=(0.01, 0.05))
            try:
                found = await again.discover("chat")
                assert sorted(h.replica_id for h in found) == sorted(h.replica_id for h in handles)
                assert all(again.state(h.replica_id) is ReplicaState.READY for h in found)
            finally:
                await again.close()

    asyncio.run(main())


def test_without_cordon_nodes_a_failing_node_is_only_logged(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path, cordon_nodes=False) as (emu, backend, registry, _m):
            for _ in range(3):
                [h] = await up(emu, backend, registry, 1)
                emu.schedule(h.replica_id, "n1")
                emu.kill(h.replica_id, reason="Error")
                await eventually(lambda h=h: not backend.alive(h), "crash seen")  # type: ignore[misc]
            await eventually(lambda: any(d.cordon for d in backend.node_decisions), "decided")
            assert not emu.node("n1")["spec"].get("unschedulable")
            assert backend.cordoned == [] and emu.events("ShipitCordoned") == []

    asyncio.run(main())


def test_cold_start_phases_come_from_the_pods_conditions_and_events(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            [h] = await up(emu, backend, registry, 1)
            emu.advance(2)
            emu.schedule(h.replica_id, "n1")
            emu.advance(30)
            emu.pull_image(h.replica_id)
            emu.advance(1)
            # The API server is away while the container starts: the watch sees it late, the
            # phases still follow the cluster's timestamps.
            emu.outage()
            await eventually(lambda: not backend.connected, "outage noticed")
            emu.start_container(h.replica_id)
            emu.advance(20)
            emu.make_ready(h.replica_id)
            await asyncio.sleep(0.1)
            emu.restore()
            await eventually(lambda: backend.state(h.replica_id) is ReplicaState.READY, "ready")
            phases = await backend.cold_start_phases(h.replica_id)
            assert phases == (("schedule", 2.0), ("pull", 30.0), ("container_start", 1.0))
            # Read from the pod's Events, listed by field selector; then kept.
            assert ("events", "list") in emu.verbs
            lists = sum(1 for _m, p in emu.requests if "fieldSelector" in p)
            assert await backend.cold_start_phases(h.replica_id) == phases
            assert sum(1 for _m, p in emu.requests if "fieldSelector" in p) == lists

            # A pod still starting has only the phases it finished.
            [g] = await up(emu, backend, registry, 1)
            emu.advance(4)
            emu.schedule(g.replica_id, "n2")
            view = lambda: backend.replicas[g.replica_id].view  # noqa: E731
            await eventually(lambda: (v := view()) is not None and v.scheduled, "bound")
            assert await backend.cold_start_phases(g.replica_id) == (("schedule", 4.0),)

    asyncio.run(main())


def test_lost_node_taint_eviction_and_a_draining_pod(tmp_path: Path) -> None:
    async def main() -> None:
        async with cluster(tmp_path) as (emu, backend, registry, _m):
            a, b, c = await up(emu, backend, registry, 3)
            emu.run_to_ready(a.replica_id, "n1")
            emu.run_to_ready(b.replica_id, "n2")
            emu.run_to_ready(c.replica_id, "n3")
            await eventually(
                lambda: all(backend.state(h.replica_id) is ReplicaState.READY for h in (a, b, c)),
                "ready",
            )
            # n1 stops reporting: its pod only turns not ready; the node says why.
            emu.lose_node("n1")
            await eventually(lambda: not backend.alive(a), "node loss seen")
            assert backend.failure(a.replica_id) == "NodeLost"
            assert registry.get(a.replica_id).state is ReplicaState.UNHEALTHY  # type: ignore[union-attr]
            # The eviction API (or the taint manager) takes c away: DisruptionTarget.
            emu.taint_evict(c.replica_id, reason="EvictionByEvictionAPI")
            await eventually(lambda: not backend.alive(c), "eviction seen")
            assert backend.failure(c.replica_id) == "EvictionByEvictionAPI"
            # b's readiness fails on a healthy node (it drains): not a failure.
            emu.fail_readiness(b.replica_id)
            await eventually(lambda: backend.state(b.replica_id) is ReplicaState.STARTING, "b")
            await asyncio.sleep(0.05)
            assert backend.alive(b) and backend.failure(b.replica_id) is None
            # Each failure went to the node health policy with its node and reason.
            kept = backend._health_state.failures
            assert [(f.node, f.reason_code) for f in kept] == [
                ("n1", "NodeLost"),
                ("n3", "EvictionByEvictionAPI"),
            ]

    asyncio.run(main())
