"""The rollout controller with a fake version pool, a fake upstream and a fake clock: candidate
replicas are started with their version, warmed up before they count, traffic weights follow
the policy, answers feed per-version windows, a finished rollout stops the old version and
makes the new one the deployment's; state persists and a new controller resumes it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.config.gateway import DeploymentConfig
from shipit.config.rollout import VersionConfig
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.rollout import Command, Phase
from shipit.services.rollouts import RolloutController, RolloutError
from shipit.services.router import RouterService
from shipit.telemetry.instruments import build_rollout_metrics


class Pool:
    def __init__(self, router: RouterService) -> None:
        self.router = router
        self.started: list[tuple[str, str]] = []
        self.stopped: list[str] = []
        self.adopted: list[str] = []
        self.n = 0

    async def start_version(self, deployment: str, version: VersionConfig) -> list[str]:
        ids = []
        for _ in range(version.replicas or 1):
            self.n += 1
            rid = f"{version.name}-{self.n}"
            self.router.registry.add(rid, f"http://{rid}", version=version.name)
            self.started.append((rid, version.name))
            ids.append(rid)
        return ids

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        self.stopped.append(replica_id)
        self.router.registry.remove(replica_id)

    def adopt_version(self, deployment: str, version: VersionConfig) -> None:
        self.adopted.append(version.name)


class Upstream:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.warmups: list[str] = []

    async def post_json(self, url: str, payload: object, *, timeout_s: float) -> tuple[int, bytes]:
        self.warmups.append(url)
        return self.status, b"{}"


def setup(
    tmp_path: Path,
    upstream: Upstream | None = None,
    registry: CollectorRegistry | None = None,
    **rollout: Any,
) -> tuple[RouterService, Pool, RolloutController, FakeClock, Upstream]:
    settings = {"bake_s": 10, "keep_old_s": 5, "steps_percent": [50], **rollout}
    settings.setdefault("analysis", {"interval_s": 5, "min_samples": 5})
    dep = DeploymentConfig.model_validate({"name": "chat", "replicas": 2, "rollout": settings})
    clock = FakeClock(100.0)
    router = RouterService(dep, clock=clock)
    for i in range(2):
        router.registry.add(f"v1-{i}", f"http://v1-{i}", state=ReplicaState.READY)
    pool = Pool(router)
    up = upstream or Upstream()
    metrics = build_rollout_metrics(registry) if registry is not None else None
    controller = RolloutController(
        {"chat": router}, pool, upstream=lambda: up, clock=clock, home=tmp_path, wall=lambda: 0.0,
        metrics=metrics,
    )  # type: ignore[arg-type]  # fmt: skip
    return router, pool, controller, clock, up


def serve(router: RouterService, n: int, *, tpot_s: float = 0.02) -> None:
    """``n`` answered streams through the router, each on the replica routing chose."""

    async def go() -> None:
        for i in range(n):
            lease = await router.acquire(
                RequestView(request_id=f"r{serve.k}", deployment="chat", model="m", stream=True)
            )
            serve.k += 1
            router.release(lease, outcome="ok")
            router.answered(lease, ttft_s=0.1 + 0.001 * (i % 7), tpot_s=tpot_s, slo_met=True)

    asyncio.run(go())


serve.k = 0  # type: ignore[attr-defined]


def tick(controller: RolloutController, clock: FakeClock, seconds: float = 1.0) -> None:
    async def go() -> None:
        await controller.tick()
        await asyncio.sleep(0)  # let warm-ups and stops run
        await asyncio.sleep(0)

    asyncio.run(go())
    clock.advance(seconds)


def ready_candidates(router: RouterService) -> None:
    for r in router.registry.records():
        if r.version != "v1":
            router.registry.set_state(r.replica_id, ReplicaState.READY)


def test_canary_runs_to_completion_through_the_router(tmp_path: Path) -> None:
    router, pool, controller, clock, up = setup(tmp_path)
    asyncio.run(controller.start({"version": "v2", "replicas": 2}))
    assert [v for _, v in pool.started] == ["v2", "v2"]
    assert dict(router.version_weights) == {"v1": 100.0, "v2": 0.0}
    tick(controller, clock)
    assert controller.active["chat"].state.phase is Phase.WARMING  # starting, not warm
    ready_candidates(router)
    tick(controller, clock)  # warm-up requests go out
    assert sorted(up.warmups) == ["http://v2-1/v1/completions", "http://v2-2/v1/completions"]
    tick(controller, clock)
    assert controller.active["chat"].state.phase is Phase.CANARY
    assert dict(router.version_weights) == {"v1": 50.0, "v2": 50.0}
    for _ in range(12):
        serve(router, 20)
        tick(controller, clock)
    active = controller.active["chat"]
    assert active.state.phase in (Phase.KEPT, Phase.COMPLETE)
    for _ in range(8):
        serve(router, 5)
        tick(controller, clock)
    assert active.state.phase is Phase.COMPLETE
    assert sorted(pool.stopped) == ["v1-0", "v1-1"]
    assert pool.adopted == ["v2"] and router.registry.version == "v2"
    assert controller.current["chat"] == "v2"
    codes = [e["code"] for e in active.history]
    assert codes[0] == "start" and "step" in codes and "promote" in codes
    assert codes[-1] == "complete"
    history = controller.history()
    assert history[-1]["phase"] == "complete" and history[-1]["candidate"]["name"] == "v2"


def test_slower_candidate_is_rolled_back_and_stopped(tmp_path: Path) -> None:
    router, pool, controller, clock, _ = setup(tmp_path)
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)

    async def go() -> None:
        for i in range(200):
            lease = await router.acquire(
                RequestView(request_id=f"x{i}", deployment="chat", model="m", stream=True)
            )
            record = router.registry.get(lease.replica_id)
            assert record is not None
            slow = record.version == "v2"
            router.release(lease, outcome="ok")
            router.answered(
                lease, ttft_s=0.1, tpot_s=0.05 if slow else 0.02 + i * 1e-6, slo_met=True
            )

    for _ in range(8):
        asyncio.run(go())
        tick(controller, clock)
        if controller.active["chat"].state.phase.done:
            break
    active = controller.active["chat"]
    assert active.state.phase is Phase.ROLLED_BACK
    assert active.last is not None and "tpot worse" in active.last.reason
    assert pool.stopped == ["v2-1"]
    assert dict(router.version_weights)["v2"] == 0.0
    assert router.registry.version == "v1"


def test_a_failed_warm_up_keeps_the_replica_out(tmp_path: Path) -> None:
    router, _, controller, clock, _ = setup(tmp_path, Upstream(status=500))
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(4):
        tick(controller, clock)
    assert controller.active["chat"].state.phase is Phase.WARMING
    assert dict(router.version_weights)["v2"] == 0.0


def test_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    _, _, controller, _, _ = setup(tmp_path)
    with pytest.raises(RolloutError, match="needs the new version's name"):
        asyncio.run(controller.start({}))
    with pytest.raises(RolloutError, match="no deployment named 'nope'"):
        asyncio.run(controller.start({"version": "v2", "deployment": "nope"}))
    with pytest.raises(RolloutError, match="like the baseline"):
        asyncio.run(controller.start({"version": "v1"}))
    asyncio.run(controller.start({"version": "v2"}))
    with pytest.raises(RolloutError, match="already rolling out v2"):
        asyncio.run(controller.start({"version": "v3"}))


def test_a_restarted_controller_resumes_the_step_and_its_baked_time(tmp_path: Path) -> None:
    router, _, controller, clock, _ = setup(tmp_path, bake_s=100)
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)
    assert controller.active["chat"].state.phase is Phase.CANARY
    for _ in range(30):
        tick(controller, clock)
    asyncio.run(controller.close())
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert saved["state"]["phase"] == "canary" and saved["state"]["elapsed_in_step_s"] >= 29

    # A new gateway: fresh routers and a clock that started again.
    router2, pool2, controller2, clock2, _ = setup(tmp_path, bake_s=100)
    controller2.load()
    active = controller2.active["chat"]
    assert active.state.phase is Phase.CANARY and active.state.step == 0
    assert clock2.now() - active.state.step_started_s >= 29
    assert dict(router2.version_weights)["v2"] == 0.0  # until its replicas are warm again
    tick(controller2, clock2)
    assert [v for _, v in pool2.started] == ["v2"]  # the candidate's replicas start again
    ready_candidates(router2)
    tick(controller2, clock2)
    tick(controller2, clock2)
    assert dict(router2.version_weights)["v2"] == 50.0
    assert [e["code"] for e in active.history].count("resume") == 1


# ----- metrics --------------------------------------------------------------------------------
def _val(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"deployment": "chat", **labels})


def _share(registry: CollectorRegistry, version: str) -> float | None:
    return _val(registry, "shipit_rollout_traffic_share_ratio", version=version)


def _phase(registry: CollectorRegistry) -> list[str]:
    phases = [p.value for p in Phase]
    return [p for p in phases if _val(registry, "shipit_rollout_state", state=p) == 1.0]


def _decisions(registry: CollectorRegistry, decision: str, reason: str) -> float | None:
    name = "shipit_rollout_decisions_total"
    return _val(registry, name, decision=decision, reason=reason)


def test_a_canary_moves_the_rollout_metrics_step_by_step(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    router, _, controller, clock, _ = setup(
        tmp_path, registry=registry, steps_percent=[25, 50], bake_s=10
    )
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    assert (_share(registry, "v1"), _share(registry, "v2")) == (1.0, 0.0)
    assert _phase(registry) == ["warming"]
    assert _val(registry, "shipit_rollout_step") == 0.0
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)
    assert _phase(registry) == ["canary"]
    assert _val(registry, "shipit_rollout_step") == 1.0
    assert (_share(registry, "v1"), _share(registry, "v2")) == (0.75, 0.25)
    assert _decisions(registry, "step", "none") == 1.0  # warmed up: no analysis yet
    for _ in range(3):  # baking within the first look's interval: counted once
        tick(controller, clock)
    assert _decisions(registry, "bake", "none") == 1.0
    for _ in range(15):
        serve(router, 20)
        tick(controller, clock)
        if _val(registry, "shipit_rollout_step") == 2.0:
            break
    assert _val(registry, "shipit_rollout_step") == 2.0
    assert (_share(registry, "v1"), _share(registry, "v2")) == (0.5, 0.5)
    assert _decisions(registry, "step", "pass") == 1.0
    # The last look's medians, per version: served TTFTs lie in [0.100, 0.106], TPOT is 0.02.
    for version in ("v1", "v2"):
        ttft = _val(registry, "shipit_rollout_window_median_seconds", version=version,
                    metric="ttft")  # fmt: skip
        assert ttft is not None and 0.1 <= ttft <= 0.106
        tpot = _val(registry, "shipit_rollout_window_median_seconds", version=version,
                    metric="tpot")  # fmt: skip
        assert tpot == pytest.approx(0.02)
    for _ in range(30):
        serve(router, 20)
        tick(controller, clock)
        if controller.active["chat"].state.phase.done:
            break
    assert _phase(registry) == ["complete"]
    assert _val(registry, "shipit_rollout_step") == 0.0
    assert (_share(registry, "v1"), _share(registry, "v2")) == (0.0, 1.0)
    assert _decisions(registry, "promote", "pass") == 1.0
    assert (_decisions(registry, "complete", "pass") or 0) + (
        _decisions(registry, "complete", "none") or 0
    ) == 1.0


def test_a_rollback_is_counted_with_the_failed_metric(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    router, _, controller, clock, _ = setup(tmp_path, registry=registry)
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)

    async def go() -> None:
        for i in range(200):
            lease = await router.acquire(
                RequestView(request_id=f"m{i}", deployment="chat", model="m", stream=True)
            )
            record = router.registry.get(lease.replica_id)
            assert record is not None
            slow = record.version == "v2"
            router.release(lease, outcome="ok")
            router.answered(
                lease, ttft_s=0.1, tpot_s=0.05 if slow else 0.02 + i * 1e-6, slo_met=True
            )

    for _ in range(8):
        asyncio.run(go())
        tick(controller, clock)
        if controller.active["chat"].state.phase.done:
            break
    assert _phase(registry) == ["rolled_back"]
    assert _decisions(registry, "rollback", "tpot") == 1.0
    assert (_share(registry, "v1"), _share(registry, "v2")) == (1.0, 0.0)
    v2_tpot = _val(registry, "shipit_rollout_window_median_seconds", version="v2", metric="tpot")
    assert v2_tpot == pytest.approx(0.05)


def test_an_abort_is_counted_as_the_operators_and_the_next_rollout_drops_old_versions(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    router, _, controller, clock, _ = setup(tmp_path, registry=registry)
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)
    controller.command("chat", Command.ABORT)
    tick(controller, clock)
    assert _decisions(registry, "abort", "operator") == 1.0
    assert _decisions(registry, "rollback", "tpot") is None
    assert _phase(registry) == ["rolled_back"]
    asyncio.run(controller.start({"version": "v3", "replicas": 1}))
    assert _share(registry, "v2") is None  # v2's series are gone
    assert (_share(registry, "v1"), _share(registry, "v3")) == (1.0, 0.0)
    assert _phase(registry) == ["warming"]
    assert _decisions(registry, "abort", "operator") == 1.0  # counters are kept


def test_a_resumed_rollout_shows_its_step(tmp_path: Path) -> None:
    router, _, controller, clock, _ = setup(tmp_path, bake_s=100)
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(3):
        tick(controller, clock)
    asyncio.run(controller.close())
    registry = CollectorRegistry()
    _, _, controller2, _, _ = setup(tmp_path, registry=registry, bake_s=100)
    controller2.load()
    assert _phase(registry) == ["canary"]
    assert _val(registry, "shipit_rollout_step") == 1.0
    assert (_share(registry, "v1"), _share(registry, "v2")) == (1.0, 0.0)  # not warm yet


def test_a_warm_up_timeout_is_counted_as_such(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    router, _, controller, clock, _ = setup(
        tmp_path, Upstream(status=500), registry=registry, warmup_timeout_s=5
    )
    asyncio.run(controller.start({"version": "v2", "replicas": 1}))
    ready_candidates(router)
    for _ in range(8):
        tick(controller, clock)
    assert _phase(registry) == ["rolled_back"]
    assert _decisions(registry, "rollback", "warmup_timeout") == 1.0
    assert _decisions(registry, "warming", "none") == 1.0  # the unchanged ticks are not counted


def test_the_canary_errors_evidence_survives_a_restart() -> None:
    from dataclasses import replace

    from shipit.policy.rollout import RolloutState
    from shipit.policy.sequential import ErrorEvidence
    from shipit.services.rollout_records import state_dict, state_from

    evidence = ErrorEvidence().add(3, 120, 1, 2280)
    state = replace(RolloutState(Phase.CANARY, 0.0, 1, 50.0), errors=evidence)
    saved = json.loads(json.dumps(state_dict(state, 80.0)))
    back = state_from(saved, 1000.0)
    assert back.errors == evidence and back.step == 1
    # A state saved before the evidence was kept resumes with none (only more cautious).
    del saved["errors"]
    assert state_from(saved, 1000.0).errors == ErrorEvidence()
