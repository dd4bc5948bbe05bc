"""The autoscaling policy driven through tick sequences on simulated time.

A tiny simulated deployment applies each decision: new replicas start and become ready
after ``cold_start_s``; stopped replicas disappear; load is spread over ready replicas and
queues at the gateway when there are none. No sleeps, no real clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import (
    AutoscalingSnapshot,
    AutoscalingState,
    ScaleDecision,
    choose_victims,
    decide,
)


def rec(rid: str, state: ReplicaState, in_flight: int, since_s: float) -> ReplicaRecord:
    return ReplicaRecord(
        rid, f"http://{rid}", state=state, in_flight=in_flight, state_since_s=since_s
    )


@dataclass
class Deployment:
    config: AutoscalingConfig
    cold_start_s: float = 5.0
    never_ready: bool = False
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    state: AutoscalingState = field(default_factory=AutoscalingState)
    counter: int = 0
    history: list[tuple[float, ScaleDecision]] = field(default_factory=list)

    def start(self, now: float, n: int) -> None:
        for _ in range(n):
            self.counter += 1
            rid = f"r{self.counter}"
            self.replicas[rid] = rec(rid, ReplicaState.STARTING, 0, now)

    def tick(self, now: float, load: int) -> ScaleDecision:
        for rid, r in list(self.replicas.items()):
            if (
                r.state is ReplicaState.STARTING
                and not self.never_ready
                and now - r.state_since_s >= self.cold_start_s
            ):
                self.replicas[rid] = rec(rid, ReplicaState.READY, 0, now)
        ready = [rid for rid, r in self.replicas.items() if r.state is ReplicaState.READY]
        queued = load if not ready else 0
        for i, rid in enumerate(ready):
            share = load // len(ready) + (1 if i < load % len(ready) else 0)
            self.replicas[rid] = rec(
                rid, ReplicaState.READY, share, self.replicas[rid].state_since_s
            )
        snap = AutoscalingSnapshot(now, tuple(self.replicas.values()), queued)
        decision, self.state = decide(self.config, snap, self.state)
        for rid in (*decision.stop, *decision.replace):
            del self.replicas[rid]
        if decision.target > len(self.replicas):
            self.start(now, decision.target - len(self.replicas))
        self.history.append((now, decision))
        return decision

    def run(
        self, load: Callable[[float], int], start: float, stop: float, step: float = 1.0
    ) -> None:
        t = start
        while t < stop:
            self.tick(t, load(t))
            t += step

    @property
    def size(self) -> int:
        return len(self.replicas)

    def sizes(self) -> list[int]:
        return [d.target for _, d in self.history]


def cfg(**kw: float) -> AutoscalingConfig:
    base: dict[str, float] = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_concurrency": 4,
        "target_utilization": 1.0,
        "autoscaling_window_s": 60,
        "panic_window_s": 6,
        "scale_down_delay_s": 30,
    }
    return AutoscalingConfig.model_validate(base | kw)


def test_steady_load_converges_to_load_over_target() -> None:
    d = Deployment(cfg())
    d.start(0, 1)
    d.run(lambda t: 20, 0, 200)
    assert d.size == 5
    assert "demand 20.0" in d.history[-1][1].reason


def test_burst_enters_panic_and_scales_up_at_once() -> None:
    d = Deployment(cfg(max_scale_up_rate=10))
    d.start(0, 1)
    d.run(lambda t: 2, 0, 100)
    assert d.size == 1
    decision = d.tick(100, 40)  # a 20x burst
    d.tick(101, 40)
    assert any(h.panic for _, h in d.history[-2:])
    # 40 requests / 4 per replica: within a few seconds the panic window says 10.
    d.run(lambda t: 40, 102, 110)
    assert d.size == 10
    assert decision.panic and decision.reason.startswith("panic")


def test_panic_never_scales_down_while_it_lasts() -> None:
    d = Deployment(cfg(max_scale_up_rate=10))
    d.start(0, 1)
    d.run(lambda t: 2, 0, 60)
    d.run(lambda t: 40, 60, 70)
    peak = d.size
    d.run(lambda t: 0, 70, 100)  # load vanishes while still in panic
    assert all(dec.target >= peak for t, dec in d.history if 70 <= t < 100 and dec.panic)


def test_slow_ramp_is_followed_and_never_scaled_down() -> None:
    d = Deployment(cfg(max_replicas=20))
    d.start(0, 1)
    d.run(lambda t: int(t // 10), 0, 400)  # +1 request every 10 s, up to 39
    sizes = d.sizes()
    assert sizes == sorted(sizes), "a steady ramp never scales down"
    # 39 in flight / 4 per replica = 10; the 60 s average lags the ramp by ~3 requests.
    assert 9 <= d.size <= 10


def test_oscillating_load_does_not_flap() -> None:
    d = Deployment(cfg(scale_down_delay_s=60))
    d.start(0, 1)
    d.run(lambda t: 16 if int(t // 20) % 2 == 0 else 4, 0, 400)
    changes = sum(1 for a, b in zip(d.sizes(), d.sizes()[1:], strict=False) if a != b)
    assert changes <= 4, f"flapped {changes} times: {d.sizes()}"


def test_scale_down_waits_for_the_whole_delay() -> None:
    d = Deployment(cfg(scale_down_delay_s=30, autoscaling_window_s=10, panic_window_s=5))
    d.start(0, 1)
    d.run(lambda t: 20, 0, 100)
    assert d.size == 5
    d.run(lambda t: 4, 100, 125)  # load drops; averages follow within 10 s, delay holds 30
    assert d.size == 5
    d.run(lambda t: 4, 125, 160)
    assert d.size < 5
    assert "delay" in d.history[120][1].reason


def test_idle_goes_to_zero_after_idle_timeout_and_back_at_first_request() -> None:
    d = Deployment(cfg(min_replicas=0, idle_timeout_s=120, scale_down_delay_s=10))
    d.start(0, 2)
    d.run(lambda t: 6, 0, 60)
    d.run(lambda t: 0, 60, 150)
    assert d.size == 1, "idle but not yet for idle_timeout: keep one warm"
    d.run(lambda t: 0, 150, 260)
    assert d.size == 0
    [to_zero] = [dec for _, dec in d.history if dec.target == 0 and dec.current == 1]
    assert "scale to zero" in to_zero.reason
    # zero -> one: the first queued request starts a replica on the same tick.
    decision = d.tick(260, 1)
    assert decision.target == 1 and decision.current == 0
    assert "scale from zero: 1 requests waiting" in decision.reason


def test_min_replicas_is_a_floor_and_max_a_ceiling() -> None:
    d = Deployment(cfg(min_replicas=2, max_replicas=3))
    d.start(0, 2)
    d.run(lambda t: 0, 0, 100)
    assert d.size == 2
    d.run(lambda t: 100, 100, 200)
    assert d.size == 3
    assert "max_replicas 3" in d.history[-1][1].reason


def test_a_replica_that_never_becomes_ready_is_replaced_not_multiplied() -> None:
    d = Deployment(cfg(startup_timeout_s=30), never_ready=True)
    d.start(0, 1)
    d.run(lambda t: 2, 0, 100)
    replaced = [dec.replace for _, dec in d.history if dec.replace]
    assert replaced, "a stuck replica must be replaced"
    assert max(d.sizes()) == 1, "starting replicas count: the policy does not pile them up"


def test_whom_to_stop_starting_first_then_fewest_in_flight() -> None:
    replicas = [
        rec("busy", ReplicaState.READY, 9, 0),
        rec("idle", ReplicaState.READY, 0, 0),
        rec("cold", ReplicaState.STARTING, 0, 50),
        rec("half", ReplicaState.READY, 3, 0),
    ]
    assert choose_victims(replicas, 1) == ("cold",)
    assert choose_victims(replicas, 3) == ("cold", "idle", "half")
    assert choose_victims(replicas, 0) == ()


def test_draining_replicas_do_not_count() -> None:
    snap = AutoscalingSnapshot(
        0.0,
        (rec("a", ReplicaState.DRAINING, 5, 0), rec("b", ReplicaState.READY, 0, 0)),
        0,
    )
    decision, _ = decide(cfg(), snap, AutoscalingState())
    assert decision.current == 1


def test_unhealthy_counts_as_starting_and_stopped_does_not_count() -> None:
    replicas = (
        rec("sick", ReplicaState.UNHEALTHY, 0, 10),
        rec("idle", ReplicaState.READY, 0, 0),
        rec("gone", ReplicaState.STOPPED, 0, 0),
    )
    assert choose_victims(list(replicas), 1) == ("sick",)
    decision, _ = decide(cfg(), AutoscalingSnapshot(20.0, replicas, 0), AutoscalingState())
    assert decision.current == 2
    # Unhealthy for longer than startup_timeout_s: replaced, like a never-ready replica.
    later = AutoscalingSnapshot(700.0, replicas, 0)
    decision, _ = decide(cfg(startup_timeout_s=600), later, AutoscalingState())
    assert decision.replace == ("sick",) and decision.current == 1


@pytest.mark.parametrize(
    ("replicas", "queued", "code"),
    [
        ((), 3, "scale_from_zero"),
        ((("a", 0),), 0, "steady"),
        ((("a", 6), ("b", 6)), 0, "scale_up"),  # needs 3: more, but not 2x the ready ones
        ((("a", 40),), 0, "panic"),
    ],
)
def test_the_decision_carries_a_reason_code(
    replicas: tuple[tuple[str, int], ...], queued: int, code: str
) -> None:
    records = tuple(rec(rid, ReplicaState.READY, n, 0) for rid, n in replicas)
    config = cfg(max_scale_up_rate=10, scale_down_delay_s=0)
    decision, _ = decide(config, AutoscalingSnapshot(1.0, records, queued), AutoscalingState())
    assert decision.reason_code == code


def test_scale_down_and_to_zero_reason_codes() -> None:
    d = Deployment(cfg(min_replicas=0, idle_timeout_s=5, scale_down_delay_s=0))
    d.start(0, 3)
    d.run(lambda t: 0, 0, 60)
    codes = [dec.reason_code for _, dec in d.history if dec.target != dec.current]
    assert codes == ["scale_down", "scale_to_zero"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas (5) must be <= max_replicas (2)"),
        ({"panic_window_s": 90}, "panic_window_s"),
        ({"target_concurrency": 0}, "target_concurrency"),
        ({"target_utilization": 1.5}, "target_utilization"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_config_names_the_field(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        cfg(**fields)


def test_the_readme_fleet_is_not_scaled_down_while_it_starts() -> None:
    """``replicas: 2`` with ``min_replicas: 0``: two replicas start (20 s cold start) and no
    request comes. Nothing was ever active, but that is not "idle forever": idle time counts
    from when the deployment could first serve, and the scale-down delay counts from start."""
    config = cfg(min_replicas=0, max_replicas=3, idle_timeout_s=300, scale_down_delay_s=120)
    d = Deployment(config, cold_start_s=20)
    d.start(0, 2)
    d.run(lambda t: 0, 0, 120)
    assert d.size == 2, f"scaled down during the scale-down delay: {d.sizes()[:5]}"
    d.run(lambda t: 0, 120, 320)
    assert d.size == 1, "after the delay, one stays warm until idle_timeout_s"
    d.run(lambda t: 0, 320, 330)
    assert d.size == 0, "idle for idle_timeout_s since the first replica was ready (at 20 s)"
    [to_zero] = [(t, dec) for t, dec in d.history if dec.target == 0 and dec.current == 1]
    assert to_zero[0] == 320


def test_the_scale_down_delay_counts_from_the_first_tick() -> None:
    d = Deployment(cfg(min_replicas=1, scale_down_delay_s=30))
    d.start(0, 3)
    d.run(lambda t: 0, 0, 30)
    assert d.size == 3
    assert "down held at 3" in d.history[0][1].reason
    d.run(lambda t: 0, 30, 40)
    assert d.size < 3


def test_a_fixed_fleet_says_it_is_fixed_not_held_by_a_delay() -> None:
    """min = max (a fixed ``replicas: 2`` runs the same loop): no load arithmetic, no delay."""
    d = Deployment(cfg(min_replicas=2, max_replicas=2, scale_down_delay_s=120))
    d.start(0, 2)
    d.run(lambda t: 0, 0, 200)
    assert d.size == 2
    reasons = {dec.reason for _, dec in d.history}
    assert reasons == {"fixed at 2 replicas (min_replicas = max_replicas)"}, reasons
