"""The fleet simulator's queue and demand models, against figures worked by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shipit.capacity.queueing import erlang_c
from shipit.sim.fleet_model import (
    DemandModel,
    RegionShape,
    ServiceModel,
    queue_tick,
    wait_probability,
)


def test_service_time_is_prefill_plus_decode() -> None:
    s = ServiceModel(
        16, prefill_tokens_per_s=5000, decode_tokens_per_s=40, input_len=1000, output_len=200
    )
    assert s.prefill_s == 0.2 and s.service_s == 5.2 and s.tokens_per_request == 1200


def test_below_saturation_the_wait_is_erlang_c() -> None:
    q, backlog, busy = queue_tick(
        slots=10, arrivals=80, backlog=0, service_s=1.0, dt=10, queue_timeout_s=60
    )
    assert q.stationary and backlog == 0 and busy == 8  # 8 requests/s for 1 s each
    assert q.p_wait == pytest.approx(erlang_c(10, 8.0))  # about 0.41
    # P(wait > 0.5 s) = C exp(-(10 - 8) * 0.5)
    assert q.met_fraction(0.5) == pytest.approx(1 - erlang_c(10, 8.0) * math.exp(-1.0))
    assert q.met_fraction(-0.1) == 0.0  # the prefill alone is over the SLO


def test_far_below_saturation_nobody_waits() -> None:
    assert wait_probability(40_000, 20_000) == 0.0
    assert wait_probability(10, 0) == 0.0 and wait_probability(10, 10) == 1.0


def test_overloaded_the_backlog_grows_by_the_excess_and_waits_grow_with_it() -> None:
    # 20 slots of 2 s serve 10/s; 15/s arrive: the backlog grows 5/s over 10 s
    q, backlog, busy = queue_tick(
        slots=20, arrivals=150, backlog=0, service_s=2.0, dt=10, queue_timeout_s=60
    )
    assert not q.stationary and backlog == pytest.approx(50) and busy == 20
    assert (q.wait0_s, q.wait1_s) == (0.0, pytest.approx(5.0))  # 50 ahead at 10/s
    assert q.met_fraction(2.5) == pytest.approx(0.5)  # half arrived before the wait hit 2.5 s
    assert q.met_fraction(5.0) == 1.0


def test_the_queue_timeout_drops_what_would_wait_longer() -> None:
    q, backlog, _ = queue_tick(
        slots=10, arrivals=1000, backlog=0, service_s=1.0, dt=10, queue_timeout_s=5
    )
    # 1000 arrive, 100 served, at most 10/s x 5 s = 50 wait: 850 dropped
    assert backlog == pytest.approx(50) and q.dropped == pytest.approx(850)


def test_no_slots_drop_everything() -> None:
    q, backlog, busy = queue_tick(
        slots=0, arrivals=30, backlog=5, service_s=1.0, dt=10, queue_timeout_s=60
    )
    assert q.down and q.dropped == 35 and backlog == 0 and busy == 0
    assert q.met_fraction(10.0) == 0.0


def test_demand_splits_by_share_and_follows_each_regions_day() -> None:
    regions = (RegionShape("a", 0.0, 0.5), RegionShape("b", 12.0, 0.5))
    flat = DemandModel((10.0, 20.0), 60.0, regions)
    assert flat.region_rps(30.0) == (5.0, 5.0) and flat.total_rps(90.0) == 20.0
    assert flat.total_rps(150.0) == 10.0  # the curve repeats
    day = DemandModel((10.0,), 60.0, regions, diurnal=0.6)
    at_14_utc = day.region_rps(14 * 3600.0)  # a's 14:00 (its peak), b's 02:00 (its trough)
    assert sum(at_14_utc) == pytest.approx(10.0)
    assert at_14_utc[0] / at_14_utc[1] == pytest.approx(1.0 / 0.4)


def _spot_plane(spot_replicas: int, rate: float) -> Any:
    from shipit.config.fleet import PlaneConfig
    from shipit.core.fleet import CapacityPool, ReplicaState
    from shipit.sim.fleet_replicas import PlaneSim, SimReplica

    cfg = PlaneConfig.model_validate(
        {
            "name": "p",
            "pools": {
                "on_demand": {"usd_per_gpu_hour": 4.0},
                "spot": {"usd_per_gpu_hour": 1.0, "preemptions_per_hour": rate},
            },
        }
    )
    plane = PlaneSim(cfg, 1, 8, shortage_window_s=1800)
    for i in range(spot_replicas):
        plane.add(SimReplica(f"r{i}", "p", CapacityPool.SPOT, f"n{i}", ReplicaState.READY, 0.0))
    return plane


def test_one_preemption_in_a_small_spot_fleet_is_a_shortage_until_the_window_passes() -> None:
    plane = _spot_plane(4, rate=0.1)  # 0.2 expected in 30 min
    plane.preempted_at.append(100.0)
    assert plane.spot_short(200.0) and plane.offers(200.0).spot_short
    assert not plane.spot_short(100.0 + 1801)


def test_a_large_spot_fleet_is_short_only_on_a_wave() -> None:
    plane = _spot_plane(100, rate=0.2)  # 10 pre-emptions expected in 30 min: 20 make a wave
    plane.preempted_at.extend(float(t) for t in range(12))
    assert not plane.spot_short(20.0)
    plane.preempted_at.extend(float(t) for t in range(12, 20))
    assert plane.spot_short(20.0)
