"""``backend: kubernetes`` through the fleet and the autoscaler, against the API emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.kubernetes import KubernetesBackend
from shipit.backends.static import StaticBackend
from shipit.config.gateway import DeploymentConfig, parse_config
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


def deployment(emu: K8sEmulator, tmp_path: Path, **extra: object) -> DeploymentConfig:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(emu.kubeconfig("serving")))
    data = {
        "name": "chat",
        "backend": "kubernetes",
        "kubernetes": {"namespace": "serving", "kubeconfig": str(kubeconfig), "gpus": 1},
        **extra,
    }
    return parse_config({"deployments": [data]}).deployments[0]


def test_the_autoscaler_scales_pods_and_replaces_a_killed_one(tmp_path: Path) -> None:
    async def main() -> None:
        emu = K8sEmulator(autopilot=True)
        await emu.start()
        emu.add_node("n1")
        d = deployment(emu, tmp_path, autoscaling={"min_replicas": 3, "max_replicas": 4})
        clock = FakeClock(100.0)
        router = RouterService(d, clock=clock)
        pods = KubernetesBackend(
            d.kubernetes, deployment="chat", registrars={"chat": router.registry},
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
        emu.add_node("n1")
        d = deployment(emu, tmp_path, replicas=2)

        def gateway() -> tuple[Fleet, RouterService]:
            router = RouterService(d, clock=FakeClock())
            pods = KubernetesBackend(
                d.kubernetes, deployment="chat", registrars={"chat": router.registry}
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


def test_backend_kubernetes_in_shipit_yaml() -> None:
    d = parse_config(
        {
            "deployments": [
                {
                    "backend": "kubernetes",
                    "kubernetes": {
                        "namespace": "llm",
                        "image": "registry.example/shipit-replica:1",
                        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                        "node_health": {"failures_to_cordon": 2, "max_cordoned_fraction": 0.1},
                    },
                }
            ]
        }
    ).deployments[0]
    assert d.backend == "kubernetes" and d.kubernetes.namespace == "llm"
    assert d.kubernetes.node_health.failures_to_cordon == 2
    assert parse_config({}).deployments[0].backend == "local"
