"""``backend: kubernetes`` through the fleet and the autoscaler, against the API emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.k8s_pods import settings_for
from shipit.backends.kubernetes import KubernetesBackend
from shipit.backends.static import StaticBackend
from shipit.config.gateway import DeploymentConfig, ShipitConfig, parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.services.autoscaler import Autoscaler
from shipit.services.router import RouterService
from shipit.telemetry.instruments import build_control_plane_metrics
from support.k8s_emulator import K8sEmulator


async def no_report(url: str) -> Mapping[str, Any] | None:
    return None


async def eventually_ready(router: RouterService, n: int) -> None:
    for _ in range(500):
        ready = [r for r in router.registry.records() if r.state is ReplicaState.READY]
        if len(ready) == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {n} ready: {router.registry.records()}")


def deployment(
    emu: K8sEmulator, tmp_path: Path, **extra: object
) -> tuple[ShipitConfig, DeploymentConfig]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(emu.kubeconfig("serving")))
    data = {
        "name": "chat",
        "backend": "kubernetes",
        "kubernetes_backend": {"kubeconfig": str(kubeconfig)},
        **extra,
    }
    cfg = parse_config(
        {
            "deployments": [data],
            "kubernetes": {
                "namespace": "serving",
                "node_pools": [{"name": "l4", "capacity": "spot", "node_selector": {"gpu": "l4"}}],
                "deployments": {"chat": {"gpus": 1, "placements": [{"pool": "l4"}]}},
            },
        }
    )
    return cfg, cfg.deployments[0]


def test_the_autoscaler_scales_pods_and_replaces_a_killed_one(tmp_path: Path) -> None:
    async def main() -> None:
        emu = K8sEmulator(autopilot=True)
        await emu.start()
        emu.add_node("n1", {"gpu": "l4"})
        cfg, d = deployment(emu, tmp_path, autoscaling={"min_replicas": 3, "max_replicas": 4})
        clock = FakeClock(100.0)
        router = RouterService(d, clock=clock)
        pods = KubernetesBackend(
            settings_for(cfg, d), deployment="chat", registrars={"chat": router.registry},
            backoff_s=(0.01, 0.05),
        )  # fmt: skip
        fleet = Fleet(
            [d], {"chat": router.registry}, local=FakeBackend(), external=StaticBackend({}),
            backends={"chat": pods},
        )  # fmt: skip
        assert d.autoscaling is not None
        scaler = Autoscaler(
            router, fleet, d.autoscaling, clock=clock,
            metrics=build_control_plane_metrics(CollectorRegistry()), probe=no_report,
        )  # fmt: skip
        try:
            await scaler.tick()
            assert len(emu.pods("serving")) == 3
            await eventually_ready(router, 3)
            assert {r.backend for r in router.registry.records()} == {"kubernetes"}
            victim = emu.pods("serving")[0]["metadata"]["name"]
            emu.kill(victim, reason="OOMKilled", ns="serving")
            for _ in range(500):
                if not fleet.alive("chat", victim):
                    break
                await asyncio.sleep(0.01)
            await scaler.tick()  # the lifecycle policy reaps it (its pod is deleted)
            await scaler.close()
            assert victim not in {p["metadata"]["name"] for p in emu.pods("serving")}
            clock.advance(5.0)  # past the first crash back-off: a replacement starts
            await scaler.tick()
            await scaler.close()
            names = {p["metadata"]["name"] for p in emu.pods("serving")}
            assert victim not in names and len(names) == 3
            await eventually_ready(router, 3)
        finally:
            await scaler.close()
            await fleet.stop()
            await emu.close()

    asyncio.run(main())


def test_a_restarted_gateway_adopts_the_pods_and_leaves_them_running(tmp_path: Path) -> None:
    async def main() -> None:
        emu = K8sEmulator(autopilot=True)
        await emu.start()
        emu.add_node("n1", {"gpu": "l4"})
        cfg, d = deployment(emu, tmp_path, replicas=2)

        def gateway() -> tuple[Fleet, RouterService]:
            router = RouterService(d, clock=FakeClock())
            pods = KubernetesBackend(
                settings_for(cfg, d), deployment="chat", registrars={"chat": router.registry}
            )
            fleet = Fleet(
                [d], {"chat": router.registry}, local=FakeBackend(), external=StaticBackend({}),
                backends={"chat": pods},
            )  # fmt: skip
            return fleet, router

        try:
            first, router = gateway()
            await first.start()
            await eventually_ready(router, 2)
            await first.stop()  # the gateway exits; its pods keep serving
            names = sorted(p["metadata"]["name"] for p in emu.pods("serving"))
            assert len(names) == 2
            second, router = gateway()
            await second.start()  # adopts both, starts none
            assert sorted(second.managed("chat")) == names
            assert len(emu.pods("serving")) == 2
            await eventually_ready(router, 2)
            await second.stop()
        finally:
            await emu.close()

    asyncio.run(main())


def test_backend_kubernetes_in_shipit_yaml_takes_placement_from_the_kubernetes_section() -> None:
    cfg = parse_config(
        {
            "deployments": [
                {
                    "name": "chat",
                    "backend": "kubernetes",
                    "kubernetes_backend": {
                        "kubeconfig": "/etc/kube/config",
                        "node_health": {"failures_to_cordon": 2, "max_cordoned_fraction": 0.1},
                    },
                },
                {"name": "local-one"},
            ],
            "kubernetes": {
                "namespace": "llm",
                "cordon_nodes": True,
                "images": {"registry": "registry.example/shipit", "tag": "1"},
                "node_pools": [
                    {
                        "name": "h100",
                        "capacity": "reserved",
                        "node_selector": {"nvidia.com/gpu.product": "H100"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    }
                ],
                "deployments": {
                    "chat": {"gpus": 2, "placements": [{"pool": "h100", "version": "v3"}]}
                },
            },
        }
    )
    chat, other = cfg.deployments
    s = settings_for(cfg, chat)
    assert (s.namespace, s.image, s.gpus) == (
        "llm",
        "registry.example/shipit/replica-embedded:1",
        2,
    )
    assert (s.version, s.pool, s.cordon_nodes) == ("v3", "reserved", True)
    assert s.node_selector == {"nvidia.com/gpu.product": "H100"}
    assert [t.key for t in s.tolerations] == ["nvidia.com/gpu"]
    assert s.kubeconfig == "/etc/kube/config" and s.node_health.failures_to_cordon == 2
    assert other.backend == "local"


def test_a_pods_cold_start_phases_reach_the_cold_start_metric(tmp_path: Path) -> None:
    async def report(url: str) -> Mapping[str, Any] | None:  # the replica's /shipit/startup
        return {"phases_s": {"process_start": 1.0, "load_weights": 10.0, "warmup": 2.0}}

    async def main() -> None:
        emu = K8sEmulator()
        await emu.start()
        emu.add_node("n1", {"gpu": "l4"})
        cfg, d = deployment(emu, tmp_path, autoscaling={"min_replicas": 1, "max_replicas": 1})
        clock = FakeClock(100.0)
        router = RouterService(d, clock=clock)
        pods = KubernetesBackend(
            settings_for(cfg, d), deployment="chat", registrars={"chat": router.registry},
            backoff_s=(0.01, 0.05),
        )  # fmt: skip
        fleet = Fleet(
            [d], {"chat": router.registry}, local=FakeBackend(), external=StaticBackend({}),
            backends={"chat": pods},
        )  # fmt: skip
        assert d.autoscaling is not None
        registry = CollectorRegistry()
        scaler = Autoscaler(
            router, fleet, d.autoscaling, clock=clock,
            metrics=build_control_plane_metrics(registry), probe=report,
        )  # fmt: skip
        try:
            await scaler.tick()  # start requested at 100 s
            [pod] = [p["metadata"]["name"] for p in emu.pods("serving")]
            emu.advance(2)
            emu.schedule(pod, "n1", ns="serving")
            emu.advance(30)
            emu.pull_image(pod, ns="serving")
            emu.advance(1)
            emu.start_container(pod, ns="serving")
            clock.advance(60.0)  # ready at 160 s on the gateway's clock
            emu.make_ready(pod, ns="serving")
            await eventually_ready(router, 1)
            await scaler.tick()
            [cold] = scaler.cold_starts
            assert cold.total_s == 60.0
            # The pod's phases, the replica's own, and the rest (60 - 33 - 13) for health.
            assert cold.phases_s == (
                ("schedule", 2.0), ("pull", 30.0), ("container_start", 1.0),
                ("process_start", 1.0), ("load_weights", 10.0), ("warmup", 2.0),
                ("health", 14.0),
            )  # fmt: skip
            for phase, seconds in (("schedule", 2.0), ("pull", 30.0), ("health", 14.0)):
                labels = {"deployment": "chat", "phase": phase}
                got = registry.get_sample_value("shipit_cold_start_phase_seconds_sum", labels)
                assert got == seconds, phase
        finally:
            await scaler.close()
            await fleet.stop()
            await emu.close()

    asyncio.run(main())


FAILURES = {
    "oom": lambda emu, pod, node: emu.kill(pod, reason="OOMKilled", ns="serving"),
    "evicted": lambda emu, pod, node: emu.evict(pod, ns="serving"),
    "node_lost": lambda emu, pod, node: emu.lose_node(node),
    "taint_evicted": lambda emu, pod, node: emu.taint_evict(pod, ns="serving"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_pod_is_reaped_and_replaced(tmp_path: Path, failure: str) -> None:
    async def main() -> None:
        emu = K8sEmulator(autopilot=True)
        await emu.start()
        for n in ("n1", "n2", "n3"):
            emu.add_node(n, {"gpu": "l4"})
        cfg, d = deployment(emu, tmp_path, autoscaling={"min_replicas": 3, "max_replicas": 3})
        clock = FakeClock(100.0)
        router = RouterService(d, clock=clock)
        pods = KubernetesBackend(
            settings_for(cfg, d), deployment="chat", registrars={"chat": router.registry},
            backoff_s=(0.01, 0.05),
        )  # fmt: skip
        fleet = Fleet(
            [d], {"chat": router.registry}, local=FakeBackend(), external=StaticBackend({}),
            backends={"chat": pods},
        )  # fmt: skip
        assert d.autoscaling is not None
        scaler = Autoscaler(
            router, fleet, d.autoscaling, clock=clock,
            metrics=build_control_plane_metrics(CollectorRegistry()), probe=no_report,
        )  # fmt: skip
        try:
            await scaler.tick()
            await eventually_ready(router, 3)
            victim = emu.pods("serving")[0]
            name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
            assert [p["spec"]["nodeName"] for p in emu.pods("serving")].count(node) == 1
            FAILURES[failure](emu, name, node)
            for _ in range(500):
                if not fleet.alive("chat", name):
                    break
                await asyncio.sleep(0.01)
            assert not fleet.alive("chat", name)
            assert router.registry.get(name).state is ReplicaState.UNHEALTHY  # type: ignore[union-attr]
            await scaler.tick()  # reaped
            clock.advance(5.0)
            await scaler.tick()  # replaced
            await scaler.close()
            live = [
                p for p in emu.pods("serving")
                if p["metadata"]["name"] != name and "deletionTimestamp" not in p["metadata"]
            ]  # fmt: skip
            assert len(live) == 3
            assert name not in fleet.managed("chat")
            await eventually_ready(router, 3)
        finally:
            await scaler.close()
            await fleet.stop()
            await emu.close()

    asyncio.run(main())
