"""The fleet simulator's autoscaling: the real policy scales from zero at the first request and
back to zero when idle; a fixed fleet serves everything at once; requests held past the
cold-start hold get the live router's 503; replica-seconds run from start request to stop."""

from __future__ import annotations

import random

import pytest

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig, QueueingConfig
from shipit.core.decisions import DecisionLog, MemoryLog
from shipit.engine.sim_timing import ReplicaModel
from shipit.policy.autoscaling import AutoscalingSnapshot, ScaleDecision
from shipit.sim.fleet import FleetSim
from shipit.sim.oracle import prefill_s
from shipit.sim.policies import FixedFleet, KnativeStyle, OurPolicy, ScaleOrder
from shipit.sim.results import ReplicaKill, SimResult
from shipit.sim.results import SimRequest as R

REPLICA = ReplicaModel(cold_start_s=10.0)
CONFIG = AutoscalingConfig(
    min_replicas=0, max_replicas=4, autoscaling_window_s=10, scale_down_delay_s=5,
    idle_timeout_s=20,
)  # fmt: skip
TRACE = [R(5.25 + i * 0.5, 256, 32) for i in range(20)]


def test_our_policy_scales_from_zero_serves_all_then_returns_to_zero() -> None:
    log = MemoryLog()
    result = FleetSim(OurPolicy(CONFIG), REPLICA, log=log).run(TRACE, end_s=200)
    assert result.dropped == 0 and len(result.ttft_s) == 20
    # The first request waited out the cold start (10 s) plus the probe that saw it ready.
    assert 10.0 <= max(result.ttft_s) <= 11.0 + 0.5
    assert result.peak_replicas >= 1
    assert 0 < result.replica_seconds < 200  # back to zero well before the end
    scale = [(e.snapshot, e.decision) for e in log.entries if e.policy == "autoscaling"]
    assert scale
    # Woken by the first held request (t=5.25), not at the next whole-second tick.
    woken = [d for s, d in scale if isinstance(s, AutoscalingSnapshot) and s.now_s == 5.25]
    assert len(woken) == 1 and isinstance(woken[0], ScaleDecision) and woken[0].target == 1


def test_a_pre_warmed_fixed_fleet_has_no_cold_start() -> None:
    result = FleetSim(FixedFleet(2), REPLICA, initial_replicas=2).run(TRACE, end_s=200)
    assert max(result.ttft_s) < 1.0 and result.attainment(1.0) == 1.0
    assert result.replica_seconds == 400


def test_knative_style_keeps_one_replica() -> None:
    result = FleetSim(KnativeStyle(CONFIG), REPLICA, initial_replicas=1).run(TRACE, end_s=200)
    assert result.dropped == 0 and result.replica_seconds >= 200


def test_requests_held_past_the_cold_start_hold_get_503() -> None:
    deployment = DeploymentConfig(
        name="sim", replicas=0, queueing=QueueingConfig(cold_start_hold_s=30)
    )
    result = FleetSim(FixedFleet(0), REPLICA, deployment).run(TRACE, end_s=100)
    assert result.dropped == 20 and result.attainment(1.0) == 0.0
    assert result.statuses() == {(503, "cold_start"): 20}


def test_decode_runs_change_nothing_but_speed() -> None:
    """Arrivals, completions, scaling and a death cut decode runs short all along: every
    request's outcome and times equal those of stepping one step at a time."""
    rng = random.Random(3)
    trace = sorted(
        (
            R(
                rng.uniform(0, 60),
                rng.randint(16, 4_000),
                rng.randint(1, 300),
                stream=rng.random() < 0.8,
            )
            for _ in range(150)
        ),
        key=lambda r: r.arrival_s,
    )
    config = AutoscalingConfig(min_replicas=1, max_replicas=3, target_concurrency=4)
    kills = [ReplicaKill(20.0, "r0")]

    def run(decode_runs: bool) -> SimResult:
        sim = FleetSim(OurPolicy(config), REPLICA, initial_replicas=1, decode_runs=decode_runs)
        return sim.run(trace, 120.0, kills=kills)

    stepped, fast = run(False), run(True)
    assert len(stepped.served) > 100
    assert sorted(fast.requests, key=str) == sorted(stepped.requests, key=str)
    assert fast.replica_seconds == stepped.replica_seconds


def test_the_snapshot_counts_the_arrivals_prefill_as_they_arrive() -> None:
    """The prefill demand rule's counter: each arrival's prompt's prefill alone, counted when
    it arrives (not at its first token), whatever the replicas do with it."""

    class Seen(FixedFleet):
        def __init__(self) -> None:
            super().__init__(1)
            self.prefill: dict[float, float] = {}

        def tick(
            self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
        ) -> ScaleOrder:
            self.prefill[snapshot.now_s] = snapshot.prefill_s
            return super().tick(snapshot, deployment=deployment, log=log)

    seen = Seen()
    trace = [R(1.5 + i, 12_000, 8) for i in range(3)]
    FleetSim(seen, REPLICA, initial_replicas=1).run(trace, end_s=30)
    each = prefill_s(REPLICA.resolve(), trace[0])
    assert each > 0.3  # a 12,000-token prompt on an H100: about 0.4 s alone
    assert seen.prefill[1.0] == 0.0
    assert seen.prefill[2.0] == pytest.approx(each)  # the first arrived at 1.5
    assert seen.prefill[4.0] == pytest.approx(3 * each)
