"""Rollouts on ``backend: kubernetes``: the rollout controller drives a real ``Fleet`` over the
real ``KubernetesBackend`` (the ``lightkube`` client over HTTP) against the in-repo API
emulator, which plays the scheduler and the kubelet. Traffic goes through a real router; only
the warm-up request's transport and the controller's clock are fakes.

What is checked is what a cluster would show: the new version's pods carry its version label,
the controller moves the router's split, the old version's pods are deleted only once the new
one is promoted and its keep window is over, and a bad canary is rolled back with its own pods
deleted and the old ones untouched."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.k8s_pods import VERSION, settings_for
from shipit.backends.kubernetes import KubernetesBackend
from shipit.backends.static import StaticBackend
from shipit.config.gateway import parse_config
from shipit.config.rollout import VersionConfig
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.rollout import Phase
from shipit.services.rollouts import RolloutController
from shipit.services.router import RouterService
from support.k8s_emulator import K8sEmulator

NS = "serving"
IDS = itertools.count()


class WarmUps:
    """The warm-up request's transport: the pods' DNS names do not resolve here."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def post_json(self, url: str, payload: object, *, timeout_s: float) -> tuple[int, bytes]:
        self.urls.append(url)
        return 200, b"{}"


@dataclass
class Rig:
    emu: K8sEmulator
    router: RouterService
    fleet: Fleet
    controller: RolloutController
    clock: FakeClock
    warmups: WarmUps

    def pods(self, version: str | None = None) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.emu.pods(NS)
            if version is None or p["metadata"]["labels"][VERSION] == version
        )

    def phase(self) -> Phase:
        return self.controller.active["chat"].state.phase

    def split(self) -> dict[str, float]:
        return dict(self.router.version_weights)

    async def tick(self, seconds: float = 1.0) -> None:
        await self.controller.tick()
        await asyncio.sleep(0.02)  # warm-ups and pod deletions run as tasks
        self.clock.advance(seconds)

    async def serve(self, n: int, *, slow: str | None = None, failing: str | None = None) -> None:
        """``n`` streamed requests through the router; the replicas of ``slow`` answer with a
        50 % higher TPOT, those of ``failing`` fail every request."""
        for _ in range(n):
            k = next(IDS)
            view = RequestView(request_id=f"r{k}", deployment="chat", model="m", stream=True)
            lease = await self.router.acquire(view)
            record = self.router.registry.get(lease.replica_id)
            assert record is not None
            if record.version == failing:
                self.router.release(lease, outcome="failed")
                continue
            self.router.release(lease, outcome="ok")
            tpot = 0.030 if record.version == slow else 0.020
            ttft = 0.1 + 0.001 * (k % 7)
            self.router.answered(lease, ttft_s=ttft, tpot_s=tpot + 1e-5 * (k % 5),
                                 slo_met=True)  # fmt: skip


async def eventually(cond: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def gateway(emu: K8sEmulator, tmp_path: Path, **rollout: Any) -> Rig:
    """One gateway's worth of control plane: router, pod backend, fleet, rollout controller
    (its state under ``tmp_path/state``, where a restarted gateway finds it)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(emu.kubeconfig(NS)))
    settings = {
        "steps_percent": [25, 50],
        "bake_s": 10,
        "keep_old_s": 5,
        "analysis": {"interval_s": 5, "min_samples": 5},
        **rollout,
    }
    cfg = parse_config(
        {
            "deployments": [
                {
                    "name": "chat",
                    "backend": "kubernetes",
                    "kubernetes_backend": {"kubeconfig": str(kubeconfig)},
                    "replicas": 2,
                    "rollout": settings,
                }
            ],
            "kubernetes": {
                "namespace": NS,
                "node_pools": [{"name": "l4", "capacity": "spot", "node_selector": {"gpu": "l4"}}],
                "deployments": {"chat": {"gpus": 1, "placements": [{"pool": "l4"}]}},
            },
        }
    )
    d = cfg.deployments[0]
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
    warmups = WarmUps()
    controller = RolloutController(
        {"chat": router}, fleet, upstream=lambda: warmups, clock=clock, home=tmp_path / "state",
        wall=lambda: 0.0,
    )  # type: ignore[arg-type]  # fmt: skip
    return Rig(emu, router, fleet, controller, clock, warmups)


@asynccontextmanager
async def rig(tmp_path: Path, **rollout: Any) -> AsyncIterator[Rig]:
    emu = K8sEmulator(autopilot=True)  # every new pod is scheduled and made ready at once
    await emu.start()
    emu.add_node("n1", {"gpu": "l4"})
    r = gateway(emu, tmp_path, **rollout)
    try:
        await r.fleet.start()
        await eventually(lambda: len(ready(r, "v1")) == 2, "two v1 pods ready")
        yield r
    finally:
        await r.controller.close()
        await r.fleet.stop()
        await emu.close()


def ready(r: Rig, version: str) -> list[str]:
    return [
        rec.replica_id
        for rec in r.router.registry.records()
        if rec.version == version and rec.state is ReplicaState.READY
    ]


async def start_and_warm(
    r: Rig, version: str, replicas: int, *, strategy: str, serve_first: int = 0
) -> list[str]:
    await r.controller.start({"version": version, "replicas": replicas, "strategy": strategy})
    await r.serve(serve_first)  # all on the old version: its window, while the new one warms
    new = r.pods(version)
    assert len(new) == replicas  # created at once, with the version's label
    assert r.split() == {"v1": 100.0, version: 0.0}  # no traffic while they come up
    await eventually(lambda: len(ready(r, version)) == replicas, f"{version} pods ready")
    for _ in range(3):
        await r.tick()
        if r.phase() is not Phase.WARMING:
            break
    # Each pod was warmed up at its own address through the headless Service.
    assert sorted(r.warmups.urls) == sorted(
        f"http://{name}.shipit-replicas.{NS}.svc:8000/v1/completions" for name in new
    )
    return new


def test_a_canary_on_kubernetes_shifts_traffic_and_deletes_the_old_pods_after_promotion(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            old = r.pods("v1")
            assert len(old) == 2
            new = await start_and_warm(r, "v2", 2, strategy="canary")
            assert r.phase() is Phase.CANARY and r.split() == {"v1": 75.0, "v2": 25.0}
            seen: list[tuple[Phase, dict[str, float], list[str]]] = []
            for _ in range(40):
                await r.serve(40)
                await r.tick()
                seen.append((r.phase(), r.split(), r.pods("v1")))
                if r.phase() is Phase.COMPLETE:
                    break
            assert r.phase() is Phase.COMPLETE
            splits = [s for p, s, _ in seen if p is Phase.CANARY]
            assert {"v1": 50.0, "v2": 50.0} in splits  # the second step
            # The old pods stayed through every step and through the keep window.
            assert all(pods == old for p, _, pods in seen if p is not Phase.COMPLETE)
            assert any(p is Phase.KEPT for p, _, _ in seen)
            await eventually(lambda: r.pods("v1") == [], "the v1 pods deleted")
            assert r.pods() == new and r.split() == {"v1": 0.0, "v2": 100.0}
            # The new version is the deployment's: the autoscaler now manages its pods.
            assert sorted(r.fleet.managed("chat")) == new
            assert r.router.registry.version == "v2"
            assert {rec.replica_id for rec in r.router.registry.records()} == set(new)

    asyncio.run(main())


def test_a_failing_canary_on_kubernetes_is_rolled_back_and_its_pods_deleted(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            old = r.pods("v1")
            await start_and_warm(r, "v2", 1, strategy="canary")
            assert r.split() == {"v1": 75.0, "v2": 25.0}
            for _ in range(20):
                await r.serve(40, failing="v2")
                await r.tick()
                if r.phase().done:
                    break
            assert r.phase() is Phase.ROLLED_BACK
            last = r.controller.active["chat"].last
            assert last is not None and "errors worse" in last.reason
            assert r.split() == {"v1": 100.0, "v2": 0.0}
            await eventually(lambda: r.pods("v2") == [], "the v2 pod deleted")
            assert r.pods() == old  # the old version was never touched
            assert sorted(r.fleet.managed("chat")) == old
            assert r.router.registry.version == "v1"

    asyncio.run(main())


def test_blue_green_on_kubernetes_switches_at_once_and_keeps_blue_until_the_window_ends(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, keep_old_s=8) as r:
            old = r.pods("v1")
            new = await start_and_warm(r, "v2", 2, strategy="blue_green")
            assert r.phase() is Phase.KEPT and r.split() == {"v1": 0.0, "v2": 100.0}
            for _ in range(6):  # within the keep window: blue's pods stay for a rollback
                await r.serve(20)
                await r.tick()
                assert r.phase() is Phase.KEPT and r.pods("v1") == old
            for _ in range(6):
                await r.serve(20)
                await r.tick()
                if r.phase() is Phase.COMPLETE:
                    break
            assert r.phase() is Phase.COMPLETE
            await eventually(lambda: r.pods("v1") == [], "the blue pods deleted")
            assert r.pods() == new

    asyncio.run(main())


def test_a_slower_green_on_kubernetes_is_rolled_back_within_the_keep_window(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, keep_old_s=30) as r:
            old = r.pods("v1")
            # Blue's window before the switch is what green is judged against.
            await start_and_warm(r, "v2", 1, strategy="blue_green", serve_first=40)
            assert r.phase() is Phase.KEPT
            for _ in range(20):
                await r.serve(20, slow="v2")
                await r.tick()
                if r.phase().done:
                    break
            assert r.phase() is Phase.ROLLED_BACK
            last = r.controller.active["chat"].last
            assert last is not None and "tpot worse" in last.reason
            assert r.split() == {"v1": 100.0, "v2": 0.0}
            await eventually(lambda: r.pods("v2") == [], "the green pod deleted")
            assert r.pods() == old

    asyncio.run(main())


def test_a_restarted_gateway_resumes_the_canary_with_the_pods_it_left(tmp_path: Path) -> None:
    """The gateway exits mid-canary (its pods keep running); the next one adopts every pod as
    the version its label says, starts no new ones, and the canary goes on to completion."""

    async def main() -> None:
        async with rig(tmp_path) as first:
            old = first.pods("v1")
            new = await start_and_warm(first, "v2", 2, strategy="canary")
            assert first.phase() is Phase.CANARY
            await first.controller.close()
            await first.fleet.stop()  # the pods stay: keep_replicas_on_exit
            assert first.pods() == sorted(old + new)

            second = gateway(first.emu, tmp_path)
            second.controller.load()
            await second.fleet.start()
            try:
                await eventually(lambda: len(ready(second, "v1")) == 2, "v1 adopted")
                await eventually(lambda: len(ready(second, "v2")) == 2, "v2 adopted as v2")
                assert second.split() == {"v1": 100.0, "v2": 0.0}  # until warm again
                for _ in range(40):
                    await second.serve(40)
                    await second.tick()
                    if second.phase().done:
                        break
                    assert second.pods("v1") == old  # no pod started twice
                    assert second.pods("v2") == new
                assert second.phase() is Phase.COMPLETE
                await eventually(lambda: second.pods("v1") == [], "the v1 pods deleted")
                assert second.pods() == new
                assert sorted(second.fleet.managed("chat")) == new
            finally:
                await second.controller.close()
                await second.fleet.stop()

    asyncio.run(main())


def test_a_gateway_that_died_before_deleting_the_old_pods_deletes_them_after_a_restart(
    tmp_path: Path,
) -> None:
    """The rollout completed but the gateway exited before the old version's pods were
    deleted: the next gateway sends them no traffic and deletes them."""

    async def main() -> None:
        async with rig(tmp_path, keep_old_s=0) as first:
            old = first.pods("v1")

            async def dies_first(deployment: str, replica_id: str) -> None:
                return None  # the gateway exits before the deletion goes out

            first.controller.pool = NoDeletePool(first.fleet, dies_first)
            new = await start_and_warm(first, "v2", 2, strategy="blue_green")
            await first.tick()
            assert first.phase() is Phase.COMPLETE
            await first.controller.close()
            await first.fleet.stop()
            assert first.pods() == sorted(old + new)

            second = gateway(first.emu, tmp_path, keep_old_s=0)
            second.controller.load()
            await second.fleet.start()
            try:
                await eventually(lambda: len(ready(second, "v2")) == 2, "v2 adopted")
                await second.tick()
                assert second.split() == {"v1": 0.0, "v2": 100.0}
                await second.serve(20)
                records = {rec.replica_id: rec for rec in second.router.registry.records()}
                assert all(records[rid].version == "v2" for rid in new)
                await eventually(lambda: second.pods("v1") == [], "the old pods deleted")
                assert second.pods() == new
            finally:
                await second.controller.close()
                await second.fleet.stop()

    asyncio.run(main())


class NoDeletePool:
    """The fleet, with its ``stop_replica`` replaced."""

    def __init__(self, fleet: Fleet, stop: Callable[[str, str], Awaitable[None]]) -> None:
        self.fleet = fleet
        self.stop_replica = stop

    async def start_version(self, deployment: str, version: VersionConfig) -> list[str]:
        return await self.fleet.start_version(deployment, version)

    def adopt_version(self, deployment: str, version: VersionConfig) -> None:
        self.fleet.adopt_version(deployment, version)
