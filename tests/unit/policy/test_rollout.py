"""The rollout policy driven through tick sequences on simulated time.

A tiny world applies each decision: requests are split between versions by the routing
filter's own ``choose_version`` with the weights the policy set; each version's answers are
drawn from its latency and error model into per-version windows, reset when the decision says
so. No sleeps, no real clock.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from pydantic import ValidationError

from shipit.config.rollout import (
    AnalysisConfig,
    RolloutSettings,
    RolloutSpec,
    VersionConfig,
    spec_for,
)
from shipit.policy.analysis import VersionWindow
from shipit.policy.rollout import (
    Command,
    Phase,
    RolloutDecision,
    RolloutSnapshot,
    RolloutState,
    decide,
    resume,
    start,
)
from shipit.policy.routing.filters import choose_version


def spec(**kw: object) -> RolloutSpec:
    data: dict[str, object] = {
        "deployment": "chat",
        "baseline": "v1",
        "candidate": VersionConfig(name="v2", replicas=2),
        "steps_percent": [5.0, 25.0, 50.0],
        "bake_s": 60.0,
        "keep_old_s": 30.0,
        "analysis": AnalysisConfig(interval_s=10.0, min_samples=50),
    }
    data.update(kw)
    return RolloutSpec.model_validate(data)


@dataclass
class Model:
    tpot_scale: float = 1.0
    error_share: float = 0.0


@dataclass
class World:
    spec: RolloutSpec
    candidate: Model = field(default_factory=Model)
    baseline: Model = field(default_factory=Model)
    rate_per_s: int = 40
    seed: int = 0
    warm_after_s: float = 5.0
    now: float = 0.0
    served: dict[str, list[tuple[float, float, bool]]] = field(
        default_factory=lambda: {"v1": [], "v2": []}
    )
    history: list[RolloutDecision] = field(default_factory=list)
    exposed: int = 0
    request_no: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.state: RolloutState = start(self.spec, 0.0)
        self.weights: dict[str, float] = {"v1": 100.0, "v2": 0.0}

    def window(self, version: str) -> VersionWindow:
        rows = self.served[version]
        ok = [r for r in rows if r[2]]
        return VersionWindow(
            ttft_s=tuple(r[0] for r in ok),
            tpot_s=tuple(r[1] for r in ok),
            requests=len(rows),
            errors=len(rows) - len(ok),
            answered=len(ok),
            slo_met=len(ok),
        )

    def serve(self) -> None:
        for _ in range(self.rate_per_s):
            self.request_no += 1
            version = choose_version(self.weights, {"v1", "v2"}, f"req-{self.request_no}")
            assert version is not None
            model = self.candidate if version == "v2" else self.baseline
            self.exposed += version == "v2"
            ok = self.rng.random() >= model.error_share
            ttft = float(self.rng.lognormal(math.log(0.2), 0.3))
            tpot = float(self.rng.lognormal(math.log(0.02), 0.2)) * model.tpot_scale
            self.served[version].append((ttft, tpot, ok))

    def tick(self, command: Command | None = None) -> RolloutDecision:
        warm = 2 if self.now >= self.warm_after_s else 0
        snap = RolloutSnapshot(
            self.now, 2, warm, self.window("v1"), self.window("v2"), command=command
        )
        decision, self.state = decide(self.spec, snap, self.state)
        self.history.append(decision)
        self.weights = dict(decision.weights)
        for version in decision.reset:
            self.served[version] = []
        return decision

    def run(self, until_s: float) -> RolloutDecision:
        decision = self.history[-1] if self.history else self.tick()
        while self.now < until_s and not self.state.phase.done:
            self.now += 1.0
            self.serve()
            decision = self.tick()
        return decision

    def codes(self) -> list[str]:
        """The reason codes in order, repeats collapsed."""
        out: list[str] = []
        for d in self.history:
            if not out or out[-1] != d.reason_code:
                out.append(d.reason_code)
        return out


def test_equal_candidate_steps_through_and_is_promoted() -> None:
    world = World(spec())
    last = world.run(1000)
    assert world.state.phase is Phase.COMPLETE
    assert last.reason_code == "complete" and last.stop_version == "v1"
    assert dict(last.weights) == {"v1": 0.0, "v2": 100.0}
    steps = [d for d in world.history if d.reason_code == "step"]
    assert [dict(d.weights)["v2"] for d in steps] == [5.0, 25.0, 50.0]
    assert world.codes() == ["warming", "step", "bake", "step", "bake", "step", "bake",
                             "promote", "bake", "complete"]  # fmt: skip
    promote = next(d for d in world.history if d.reason_code == "promote")
    assert "every step passed" in promote.reason and "kept 30 s" in promote.reason
    # Each step baked its full minute before the next one.
    times = [i for i, d in enumerate(world.history) if d.reason_code in ("step", "promote")]
    assert all(b - a >= 60 for a, b in itertools.pairwise(times))


def test_slower_candidate_is_rolled_back_with_the_figures() -> None:
    world = World(spec(), candidate=Model(tpot_scale=1.4))
    last = world.run(1000)
    assert world.state.phase is Phase.ROLLED_BACK
    assert last.reason_code == "rollback" and last.stop_version == "v2"
    assert dict(last.weights) == {"v1": 100.0, "v2": 0.0}
    assert last.analysis is not None
    [failed] = [c for c in last.analysis.failed() if c.metric == "tpot"]
    assert failed.effect > 0.25
    assert "rolled back to v1" in last.reason and "tpot worse" in last.reason
    assert "median" in last.reason and "Mann-Whitney p=" in last.reason
    # Caught before the candidate reached half the traffic.
    assert not any(dict(d.weights)["v2"] == 50.0 for d in world.history)


def test_erroring_candidate_is_rolled_back_on_errors() -> None:
    world = World(spec(), candidate=Model(error_share=0.10))
    last = world.run(1000)
    assert world.state.phase is Phase.ROLLED_BACK
    assert "errors worse" in last.reason
    assert world.exposed < 400  # rolled back at the first step, at 5 %


def test_failure_rolls_back_mid_bake_not_at_its_end() -> None:
    world = World(spec(steps_percent=[50.0], bake_s=600.0), candidate=Model(tpot_scale=2.0))
    world.run(10_000)
    rollback = len(world.history) - 1
    first_step = next(i for i, d in enumerate(world.history) if d.reason_code == "step")
    assert rollback - first_step <= 20  # an interval or two, not the 600 s bake


def test_blue_green_switches_at_once_then_stops_blue() -> None:
    world = World(spec(strategy="blue_green", keep_old_s=40.0))
    world.run(1000)
    assert world.codes() == ["warming", "switch", "bake", "complete"]
    switch = next(d for d in world.history if d.reason_code == "switch")
    assert dict(switch.weights) == {"v1": 0.0, "v2": 100.0}
    assert switch.reset == frozenset({"v2"})  # blue's last window stays the reference
    assert world.history[-1].stop_version == "v1"


def test_blue_green_without_a_keep_window_switches_and_completes() -> None:
    world = World(spec(strategy="blue_green", keep_old_s=0.0))  # no look was planned: alpha
    world.run(1000)  # was a division by zero
    assert world.codes() == ["warming", "switch", "complete"]
    assert world.history[-1].stop_version == "v1"


def test_blue_green_rolls_back_a_worse_green_within_the_keep_window() -> None:
    world = World(spec(strategy="blue_green", keep_old_s=120.0), candidate=Model(tpot_scale=1.5))
    world.now = 0.0
    # Blue serves alone during the warm-up: that window is the reference after the switch.
    world.warm_after_s = 20.0
    world.run(1000)
    assert world.state.phase is Phase.ROLLED_BACK
    assert "after the switch, against v1 before it" in world.history[-1].reason


def test_operator_abort_and_promote() -> None:
    world = World(spec())
    world.run(70)
    assert world.state.phase is Phase.CANARY
    d = world.tick(Command.ABORT)
    assert d.reason_code == "abort" and "aborted by the operator" in d.reason
    assert dict(d.weights)["v2"] == 0.0 and d.stop_version == "v2"

    world = World(spec())
    world.run(70)
    d = world.tick(Command.PROMOTE)
    assert d.reason_code == "promote" and "by the operator" in d.reason
    assert dict(d.weights)["v2"] == 100.0 and world.state.phase is Phase.KEPT


def test_too_little_traffic_holds_then_rolls_back_after_max_hold() -> None:
    world = World(spec(max_hold_s=120.0), rate_per_s=1)
    world.run(5000)
    codes = world.codes()
    assert "hold" in codes
    hold = next(d for d in world.history if d.reason_code == "hold")
    assert "needed on each side" in hold.reason
    assert world.state.phase is Phase.ROLLED_BACK
    assert "too few samples" in world.history[-1].reason


def test_candidate_that_never_warms_up_is_rolled_back() -> None:
    world = World(spec(warmup_timeout_s=30.0), warm_after_s=1e9)
    world.run(100)
    assert world.state.phase is Phase.ROLLED_BACK
    assert "0 of 2 v2 replicas warmed up within 30 s" in world.history[-1].reason
    assert all(dict(d.weights)["v2"] == 0.0 for d in world.history)


def test_manual_promotion_waits_after_the_last_step() -> None:
    world = World(spec(auto_promote=False))
    world.run(400)
    assert world.state.phase is Phase.CANARY and world.history[-1].reason_code == "hold"
    assert "waiting for `shipit rollout promote`" in world.history[-1].reason


def test_sessions_stay_on_one_version_as_the_canary_grows() -> None:
    world = World(spec(steps_percent=[1.0, 5.0, 25.0, 50.0, 75.0]))
    world.run(1000)
    splits = [dict(w) for w in dict.fromkeys(d.weights for d in world.history)]
    assert len(splits) == 7  # warming (0 %), the five steps, promoted (100 %)
    sessions = [f"session-{i}" for i in range(2000)]
    seen: dict[str, list[str]] = {s: [] for s in sessions}
    for split in splits:
        for s in sessions:
            version = choose_version(split, {"v1", "v2"}, s)
            assert version is not None
            if not seen[s] or seen[s][-1] != version:
                seen[s].append(version)
    # A session moves at most once, and only from the baseline to the candidate.
    assert all(path in (["v1"], ["v2"], ["v1", "v2"]) for path in seen.values())
    assert sum(path[0] == "v1" and len(path) == 2 for path in seen.values()) > 1000


def test_a_finished_rollout_stays_finished() -> None:
    world = World(spec(), candidate=Model(error_share=0.5))
    world.run(1000)
    snap = RolloutSnapshot(2000.0, 2, 2)
    d, state = decide(world.spec, snap, world.state)
    assert state == world.state and d.reason_code == "rolled_back"


def test_resume_keeps_the_time_already_baked() -> None:
    s = RolloutState(Phase.CANARY, 10.0, 1, 100.0, 130.0, 3, 25.0)
    back = resume(s, now_s=5.0, elapsed_in_step_s=40.0)
    assert back.step_started_s == -35.0 and back.last_look_s is None
    assert (back.phase, back.step, back.candidate_percent) == (Phase.CANARY, 1, 25.0)


def test_spec_from_settings_and_bad_input() -> None:
    settings = RolloutSettings(version="v1", versions=[VersionConfig(name="v2")])
    s = spec_for(settings, "chat", settings.versions[0], strategy="blue_green", bake_s=None)
    assert (s.baseline, s.candidate.name, s.strategy, s.bake_s) == ("v1", "v2", "blue_green", 60.0)
    with pytest.raises(ValidationError, match="steps_percent must increase"):
        RolloutSettings(steps_percent=[5, 1])
    with pytest.raises(ValidationError, match="like the baseline"):
        spec(candidate=VersionConfig(name="v1"))
    with pytest.raises(ValidationError, match="each step is in"):
        spec(steps_percent=[0.0, 50.0])
    with pytest.raises(ValidationError, match="letters, digits"):
        VersionConfig(name="v 2")


def test_shadow_mirrors_without_user_traffic_until_the_operator_decides() -> None:
    world = World(spec(strategy="shadow"))
    world.run(300)
    assert world.state.phase is Phase.SHADOW
    assert world.codes() == ["warming", "shadow"]
    assert all(dict(d.weights)["v2"] == 0.0 for d in world.history)
    assert world.exposed == 0
    d = world.tick(Command.PROMOTE)
    assert d.reason_code == "promote" and dict(d.weights)["v2"] == 100.0
    assert world.state.phase is Phase.KEPT

    world = World(spec(strategy="shadow"))
    world.run(60)
    d = world.tick(Command.ABORT)
    assert world.state.phase is Phase.ROLLED_BACK and d.stop_version == "v2"


def test_decisions_round_trip_through_the_decision_log() -> None:
    from shipit.core.decisions import LogEntry, entry_line, read_entries

    world = World(spec(), candidate=Model(tpot_scale=1.4))
    world.run(1000)
    decision = world.history[-1]
    snap = RolloutSnapshot(1.0, 2, 2, world.window("v1"), world.window("v2"), Command.ABORT)
    entry = next(
        read_entries([entry_line(LogEntry("rollout", "chat", snap, world.state, decision))])
    )
    assert (entry.snapshot, entry.state, entry.decision) == (snap, world.state, decision)


def test_errors_evidence_is_carried_from_step_to_step() -> None:
    world = World(spec())
    while world.state.step < 1 and not world.state.phase.done:
        world.now += 1.0
        world.serve()
        world.tick()
    # The first step's window (reset on entering the second) is in the evidence.
    evidence = world.state.errors
    entered = next(d for d in world.history if d.reason_code == "step" and d.analysis)
    assert entered.analysis is not None
    [errors] = [c for c in entered.analysis.checks if c.metric == "errors"]
    assert evidence.requests_candidate == errors.n_candidate > 0
    assert evidence.requests_baseline == errors.n_baseline
    world.run(world.now + 15)  # the second step's first look pools both steps
    look = next(d for d in reversed(world.history) if d.analysis is not None)
    assert look.analysis is not None
    [errors] = [c for c in look.analysis.checks if c.metric == "errors"]
    assert errors.n_candidate > evidence.requests_candidate
    assert "over the canary" in errors.reason


def test_a_small_error_increase_is_caught_by_pooling_the_steps() -> None:
    """1.1 % of the candidate's requests fail, 0.1 % of the baseline's: too few failures in
    one step's window for a test at the per-look alpha (Fisher's, per window, caught 3 of these
    10 seeds), enough over the canary."""
    caught = 0
    for seed in range(10):
        world = World(
            spec(),
            candidate=Model(error_share=0.011),
            baseline=Model(error_share=0.001),
            seed=seed,
        )
        last = world.run(1000)
        caught += world.state.phase is Phase.ROLLED_BACK and "errors worse" in last.reason
    assert caught >= 8
