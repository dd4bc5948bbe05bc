"""The demand signal and its failure modes, each as a tick sequence.

Each test reproduces a way the backlog-counting policy over- or under-scaled on a production
trace: backlog counted as load after a scale from zero, panic on a burst shorter than the cold
start, panic holding replicas a whole window after the burst, and a concurrency target far
below what a replica holds. Counters (arrivals, completions, service seconds) are fed as the
gateway counts them; no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, ScaleDecision, decide

READY, STARTING = ReplicaState.READY, ReplicaState.STARTING


def rec(rid: str, state: ReplicaState, in_flight: int, since_s: float = 0.0) -> ReplicaRecord:
    return ReplicaRecord(
        rid,
        f"http://{rid}",
        state=state,
        in_flight=in_flight,
        state_since_s=since_s,
        max_concurrency=16,
    )


@dataclass
class Fleet:
    """Counters and replicas the test sets; ``tick`` applies nothing but records decisions."""

    config: AutoscalingConfig
    state: AutoscalingState = field(default_factory=AutoscalingState)
    arrivals: int = 0
    completed: int = 0
    service_s: float = 0.0

    def tick(
        self,
        now: float,
        replicas: tuple[ReplicaRecord, ...],
        *,
        queued: int = 0,
        arrived: int = 0,
        done: int = 0,
        each_s: float = 2.0,
    ) -> ScaleDecision:
        self.arrivals += arrived
        self.completed += done
        self.service_s += done * each_s
        snap = AutoscalingSnapshot(
            now, replicas, queued, self.arrivals, self.completed, self.service_s
        )
        decision, self.state = decide(self.config, snap, self.state)
        return decision


def cfg(**kw: float) -> AutoscalingConfig:
    base: dict[str, float] = {
        "min_replicas": 0,
        "max_replicas": 20,
        "target_concurrency": 8,
        "target_utilization": 1.0,
        "autoscaling_window_s": 60,
        "panic_window_s": 6,
        "scale_down_delay_s": 30,
        "cold_start_s": 30,
    }
    return AutoscalingConfig.model_validate(base | kw)


def test_backlog_held_through_a_cold_start_is_not_steady_demand() -> None:
    """One replica starting, 20 requests held for it, arrivals at 0.5/s of 2 s each: the one
    replica drains that long before another could start, so the target stays 1 (counting
    the queue as load asked for 20 / 8 = 3, growing as the window filled)."""
    f = Fleet(cfg())
    for t in range(60):  # history: service time known, one request every 2 s
        f.tick(float(t), (rec("a", READY, 1),), arrived=t % 2, done=t % 2)
    starting = (rec("b", STARTING, 0, 60.0),)
    targets = [f.tick(float(t), starting, queued=20, arrived=t % 2).target for t in range(60, 85)]
    assert targets == [1] * 25


def test_a_backlog_that_outlasts_the_cold_start_adds_replicas_once() -> None:
    f = Fleet(cfg(max_scale_up_rate=20))
    for t in range(60):
        f.tick(float(t), (rec("a", READY, 4),), arrived=2, done=2)  # 2/s of 2 s: 4 in service
    # 200 queued with arrivals still at 2/s: one replica serves 8 / 2 s = 4/s, so after a
    # 30 s cold start 200 - 60 = 140 still wait: 140 / 8 per replica = 18 more.
    d = f.tick(60.0, (rec("a", READY, 16),), queued=200, arrived=2)
    assert d.target == 19 and "outlast the cold start" in d.reason


def test_burst_shorter_than_the_cold_start_starts_nothing() -> None:
    """A burst the one warm replica absorbs in its free slots: no panic scale-up whose
    replicas would be ready only after the burst was served (it used to go 1 -> 3)."""
    f = Fleet(cfg())
    for t in range(100):
        f.tick(float(t), (rec("a", READY, 2),), arrived=1, done=1)
    burst = [f.tick(float(t), (rec("a", READY, 14),), arrived=3, done=1) for t in range(100, 104)]
    after = [f.tick(float(t), (rec("a", READY, 2),), arrived=1, done=1) for t in range(104, 140)]
    assert {d.target for d in [*burst, *after]} == {1}


def test_panic_scale_down_delay_runs_from_the_burst() -> None:
    """A real overload: many replicas. Once it ends they go after the scale-down delay
    (30 s) from the burst, not a stable window (60 s) plus the delay later."""
    f = Fleet(cfg(max_scale_up_rate=20))
    for t in range(60):
        f.tick(float(t), (rec("a", READY, 2),), arrived=1, done=1)
    fleet = tuple(rec(f"r{i}", READY, 16) for i in range(8))
    # 64/s of 2 s each keep 128 in service: the 8 replicas' 16 slots each, twice the need.
    peak = [f.tick(float(t), fleet, arrived=64, done=64) for t in range(60, 70)]
    assert any(d.panic for d in peak) and max(d.target for d in peak) >= 8
    quiet = tuple(rec(f"r{i}", READY, 0) for i in range(8))
    after = {t: f.tick(float(t), quiet, done=0) for t in range(70, 140)}
    assert after[85].target == 8, "held by the scale-down delay"
    # Down within the delay plus the panic window after the burst; before, panic held the
    # count (max(need, current)) until t=130 and the delay then ran to 160.
    assert after[110].target < 8


def test_concurrency_target_defaults_to_what_a_replica_holds() -> None:
    """Unset, the target is the replicas' max_concurrency (16): 32 in flight at 0.7 need
    3 replicas, not 32 / (8 x 0.7) = 6."""
    config = AutoscalingConfig(min_replicas=1, max_replicas=10, max_scale_up_rate=10)
    state = AutoscalingState()
    replicas = (rec("a", READY, 16), rec("b", READY, 16))
    for t in range(70):
        d, state = decide(config, AutoscalingSnapshot(float(t), replicas, 0), state)
    assert d.target == 3
    explicit = AutoscalingConfig(min_replicas=1, max_replicas=10, target_concurrency=8)
    d, _ = decide(explicit, AutoscalingSnapshot(0.0, replicas, 0), AutoscalingState())
    assert d.target == 6


def test_without_counters_the_queue_still_counts() -> None:
    """A caller that counts no arrivals (the live gateway today) shows demand beyond what
    runs only as a queue: a saturated replica with 20 waiting must still scale up."""
    config = cfg(max_scale_up_rate=10)
    snap = AutoscalingSnapshot(1.0, (rec("a", READY, 8),), 20)
    d, _ = decide(config, snap, AutoscalingState())
    assert d.target == 4  # (8 in service + 20 queued) / 8 per replica


def test_replicas_started_for_a_backlog_go_once_it_drained() -> None:
    """19 replicas started for a backlog (see above) drain it; the demand (2/s of 2 s: 4 in
    service, one replica) is what the scale-down delay then guards, so the fleet halves each
    tick (the down rate limit) from the tick the queue is empty, instead of holding 19 for
    the 30 s delay from the last tick that counted the backlog."""
    f = Fleet(cfg(max_scale_up_rate=20))
    for t in range(60):
        f.tick(float(t), (rec("a", READY, 4),), arrived=2, done=2)
    assert f.tick(60.0, (rec("a", READY, 16),), queued=200, arrived=2).target == 19
    starting = (rec("a", READY, 16), *(rec(f"s{i}", STARTING, 0, 60.0) for i in range(18)))
    held = [f.tick(float(t), starting, queued=200, arrived=2, done=2) for t in range(61, 90)]
    assert {d.target for d in held} == {19}, "nothing stopped while requests wait"
    fleet = [rec("a", READY, 16), *(rec(f"s{i}", READY, 16) for i in range(18))]
    targets = []
    for t in range(90, 95):
        d = f.tick(float(t), tuple(fleet), arrived=2, done=2)
        targets.append(d.target)
        fleet = [r for r in fleet if r.replica_id not in d.stop]
    assert targets == [9, 4, 2, 1, 1]


def test_scale_down_delay_is_never_shorter_than_a_cold_start() -> None:
    """Quick settings (5 s delay) with a 30 s cold start: a lower target must hold 30 s.
    Window 10 s; 16/s of 2 s each until t=60 keep 32 in service (4 replicas). The arrival
    rate over the window then falls: 14.4/s at t=60 (28.8 in service -> 4), 12.8/s at t=61
    (25.6 -> 4), 11.2/s at t=62 (22.4 -> 3): the last proposal of 4 is at t=61, so the
    target is 4 through t=91 and 3 at t=92 (with the 5 s delay alone it fell at t=67)."""
    f = Fleet(cfg(min_replicas=1, autoscaling_window_s=10, panic_window_s=1, scale_down_delay_s=5))
    fleet = tuple(rec(f"r{i}", READY, 8) for i in range(4))
    for t in range(60):
        f.tick(float(t), fleet, arrived=16, done=16)
    quiet = tuple(rec(f"r{i}", READY, 0) for i in range(4))
    after = {t: f.tick(float(t), quiet) for t in range(60, 100)}
    assert after[67].target == 4 and after[91].target == 4
    assert after[92].target == 3 and "30s delay" in after[91].reason
