"""The autoscaling fleet simulator: the real policy scales from zero at the first request and
back to zero when idle; a fixed fleet serves everything at once; requests held past the limit
are counted as dropped; replica-seconds run from start request to stop."""

from __future__ import annotations

from shipit.config.autoscaling import AutoscalingConfig
from shipit.sim.autoscaling import FixedFleet, FleetSim, KnativeStyle, OurPolicy, ReplicaModel
from shipit.sim.autoscaling import SimRequest as R

REPLICA = ReplicaModel(cold_start_s=10.0)
CONFIG = AutoscalingConfig(
    min_replicas=0, max_replicas=4, autoscaling_window_s=10, scale_down_delay_s=5,
    idle_timeout_s=20,
)  # fmt: skip
TRACE = [R(5.0 + i * 0.5, 256, 32) for i in range(20)]


def test_our_policy_scales_from_zero_serves_all_then_returns_to_zero() -> None:
    result = FleetSim(OurPolicy(CONFIG), REPLICA).run(TRACE, end_s=200)
    assert result.dropped == 0 and len(result.ttft_s) == 20
    assert max(result.ttft_s) >= 10.0  # the first request waited out the cold start
    assert result.peak_replicas >= 1
    assert 0 < result.replica_seconds < 200  # back to zero well before the end


def test_a_pre_warmed_fixed_fleet_has_no_cold_start() -> None:
    result = FleetSim(FixedFleet(2), REPLICA, initial_replicas=2).run(TRACE, end_s=200)
    assert max(result.ttft_s) < 1.0 and result.attainment(1.0) == 1.0
    assert result.replica_seconds == 400


def test_knative_style_keeps_one_replica() -> None:
    result = FleetSim(KnativeStyle(CONFIG), REPLICA, initial_replicas=1).run(TRACE, end_s=200)
    assert result.dropped == 0 and result.replica_seconds >= 200


def test_requests_held_past_the_limit_are_dropped() -> None:
    result = FleetSim(FixedFleet(0), REPLICA, hold_s=30).run(TRACE, end_s=100)
    assert result.dropped == 20 and result.attainment(1.0) == 0.0
