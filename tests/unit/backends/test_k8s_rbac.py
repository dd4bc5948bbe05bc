"""The gateway's rendered RBAC grants exactly the calls the Kubernetes replica backend makes:
the backend runs through every path it has (start, watch, cold-start phases, a lost node, a
cordon, stop) against the API emulator, which records each request as the RBAC verb and
resource it needs; the set must equal what ``shipit render k8s`` grants, no more, no less."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from shipit.backends.base import ReplicaSpec
from shipit.backends.kubernetes import KubernetesBackend
from shipit.config.gateway import parse_config
from shipit.config.k8s_backend import KubernetesBackendConfig
from shipit.core.fleet import ReplicaState
from shipit.deploy import k8s
from support.k8s_emulator import K8sEmulator


async def _eventually(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def granted(cordon_nodes: bool) -> set[tuple[str, str]]:
    cfg = parse_config(
        {
            "deployments": [{"name": "chat", "backend": "kubernetes"}],
            "kubernetes": {"cordon_nodes": cordon_nodes},
        }
    )
    objects = k8s.render(cfg)
    rules = [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
    assert all(r["apiGroups"] == [""] for r in rules)
    return {(res, verb) for r in rules for res in r["resources"] for verb in r["verbs"]}


def test_the_role_grants_exactly_what_the_backend_calls(tmp_path: Path) -> None:
    async def main() -> set[tuple[str, str]]:
        emu = K8sEmulator()
        await emu.start()
        for n in ("n1", "n2", "n3", "n4"):
            emu.add_node(n)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps(emu.kubeconfig()))
        cfg = KubernetesBackendConfig(
            kubeconfig=str(kubeconfig),
            cordon_nodes=True,
            node_health={"failures_to_cordon": 2, "max_cordoned_fraction": 0.5},  # type: ignore[arg-type]
        )
        backend = KubernetesBackend(cfg, deployment="chat", backoff_s=(0.01, 0.05))
        try:
            a, b, c = await backend.start(ReplicaSpec("chat", "m"), 3)
            for h, node in ((a, "n1"), (b, "n2"), (c, "n2")):
                emu.run_to_ready(h.replica_id, node)
            await _eventually(
                lambda: all(backend.state(h.replica_id) is ReplicaState.READY for h in (a, b, c)),
                "ready",
            )
            assert await backend.cold_start_phases(a.replica_id)
            emu.lose_node("n1")  # the node is read to tell a lost node from a draining pod
            await _eventually(lambda: not backend.alive(a), "node lost")
            emu.kill(b.replica_id, reason="Error")
            emu.kill(c.replica_id, reason="Error")  # two on n2: cordon, with an Event
            await _eventually(lambda: backend.cordoned == ["n2"], "cordon")
            for h in (a, b, c):
                await backend.stop(h)
        finally:
            await backend.close()
            await emu.close()
        return emu.verbs

    called = asyncio.run(main())
    assert called == granted(cordon_nodes=True)
    # Without cordoning, the same minus the patch.
    assert granted(cordon_nodes=False) == called - {("nodes", "patch")}
