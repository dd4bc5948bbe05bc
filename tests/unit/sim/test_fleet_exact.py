"""Request-exact traffic in the fleet simulator: each request of a trace at its own time, routed
by the global routing policy with the planes' slots as they are then, and queued first come
first served at its plane. Expected waits are worked by hand from the arrivals."""

from __future__ import annotations

from typing import Any

import pytest

from shipit.config.fleet import parse_fleet_config
from shipit.sim.fleet_exact import PlaneQueue, TraceArrival
from shipit.sim.fleet_setup import fleet_setup
from shipit.sim.regions import simulate_fleet

# 1,000 prefill and 10 decode tokens/s: a request of 100 + 10 tokens prefills in 0.1 s and
# holds its slot 1.1 s.
TRAFFIC = {
    "regions": [
        {"name": "west", "utc_offset_h": -5, "share": 1.0},
        {"name": "east", "utc_offset_h": 1, "share": 0.0001},
    ],
    "replica": {"concurrency": 1, "prefill_tokens_per_s": 1000, "decode_tokens_per_s": 10},
    "ttft_slo_ms": 500,
    "input_len": 100,
    "output_len": 10,
}
POOLS = {"on_demand": {"usd_per_gpu_hour": 4.0}}
NEAR = {"name": "near", "utc_offset_h": -5, "min_replicas": 1, "max_replicas": 1, "pools": POOLS}
FAR = {"name": "far", "utc_offset_h": 1, "min_replicas": 1, "max_replicas": 1, "pools": POOLS}


def run(planes: list[dict[str, Any]], arrivals: list[TraceArrival], end_s: float) -> Any:
    cfg = parse_fleet_config({"fleet": {"traffic": TRAFFIC, "planes": planes}})
    setup = fleet_setup(
        cfg,
        rates_rps=(1.0,),
        step_s=60.0,
        hours=end_s / 3600.0,
        sample_s=end_s,
        requests=tuple(arrivals),
    )
    return simulate_fleet(setup)


def req(at_s: float, region: int | None = 0) -> TraceArrival:
    return TraceArrival(at_s, 100, 10, region)


LATE = req(100.0)  # past the run's end: the trace does not repeat within it


def test_one_slot_queues_first_come_first_served() -> None:
    # 0.0 starts at once (TTFT 0.1 s: met); 0.5 waits for the slot until 1.1 (TTFT 0.7 s:
    # missed); 3.0 finds it free again (met). Nothing spills: one plane.
    out = run([NEAR], [req(0.0), req(0.5), req(3.0)], end_s=3.5)
    assert out["requests"] == 3
    assert out["slo_attainment"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["routed_to"] == {"west->near": 3}
    assert out["dropped"] == 0 and out["failed"] == 0


def test_a_request_that_finds_its_nearest_plane_full_spills_and_pays_the_distance() -> None:
    # 0.00 -> near (free); 0.01 -> near is full, far has room: spilled, 6 time zones = 30 ms,
    # TTFT 0.13 s (met); 0.02 -> both full, queues alike: the nearer, where it waits until
    # 1.1 s (TTFT 1.18 s: missed).
    out = run([NEAR, FAR], [req(0.0), req(0.01), req(0.02), LATE], end_s=2.0)
    assert out["routed_to"] == {"west->near": 2, "west->far": 1}
    assert out["routing"] == {"all_full": 1, "nearest": 1, "spilled": 1}
    assert out["slo_attainment"] == pytest.approx(2 / 3, abs=1e-4)


def test_the_spill_cost_counts_against_the_slo() -> None:
    tight = {**TRAFFIC, "ttft_slo_ms": 120}  # 0.1 s prefill: 30 ms away is past 120 ms
    cfg = parse_fleet_config({"fleet": {"traffic": tight, "planes": [NEAR, FAR]}})
    setup = fleet_setup(
        cfg, rates_rps=(1.0,), step_s=60, hours=1 / 3600, requests=(req(0.0), req(0.01), LATE)
    )
    out = simulate_fleet(setup)
    assert out["routed_to"] == {"west->near": 1, "west->far": 1}
    assert out["slo_attainment"] == pytest.approx(0.5, abs=1e-4)


def test_a_traces_region_decides_where_each_request_comes_from() -> None:
    out = run([NEAR, FAR], [req(0.0, region=1), req(2.0, region=1), req(4.0, 0)], end_s=5.0)
    assert out["routed_to"] == {"east->far": 2, "west->near": 1}
    assert out["regions"]["east"]["requests"] == 2


def test_the_trace_repeats_to_cover_the_run() -> None:
    # Arrivals at 0 and 1.5 s: the trace's period is 3 s (its span and one mean gap), so 10 s
    # hold seven requests, each alone on the slot.
    out = run([NEAR], [req(0.0), req(1.5)], end_s=10.0)
    assert out["requests"] == 7  # 0, 1.5 | 3, 4.5 | 6, 7.5 | 9
    assert out["slo_attainment"] == 1.0


def test_plane_queue_drops_what_would_wait_past_the_timeout_and_keeps_early_slots() -> None:
    q = PlaneQueue()
    q.resize(2, 0.0)
    assert q.admit(0.0, 4.0, timeout_s=3.0) == 0.0
    assert q.admit(1.0, 4.0, timeout_s=3.0) == 0.0
    assert q.admit(2.0, 4.0, timeout_s=3.0) == pytest.approx(2.0)  # the slot of 0.0 frees at 4
    assert q.admit(2.5, 4.0, timeout_s=3.0) == pytest.approx(2.5)  # 1.0's at 5
    assert q.admit(2.6, 4.0, timeout_s=3.0) is None  # 8.0 is 5.4 s away: dropped
    assert q.settle(2.6) == (0, 0.0)
    assert (q.queued, q.in_service) == (2, 2)  # 2.0 and 2.5 wait
    assert q.settle(5.0) == (2, 8.0) and (q.queued, q.in_service) == (0, 2)
    q.resize(1, 5.0)  # a replica went: the slot that frees last goes with it
    assert q.free_at == [8.0]
    assert q.admit(5.0, 1.0, timeout_s=10.0) == pytest.approx(3.0)


def test_events_happen_between_requests_not_at_the_next_tick() -> None:
    # An outage at 12 s, inside the 10-20 s tick: the request at 13 s reaches the plane after
    # it went down (before its probes failed: sent there, failed); by 17 s three failed
    # probes have taken it out and the far plane serves. On 10 s ticks the outage would have
    # begun at 20 s and all three would have been served near.
    cfg = parse_fleet_config(
        {
            "fleet": {
                "traffic": TRAFFIC,
                "planes": [NEAR, FAR],
                "simulation": {"outages": [{"plane": "near", "at_h": 12 / 3600, "for_h": 1}]},
            }
        }
    )
    setup = fleet_setup(
        cfg,
        rates_rps=(1.0,),
        step_s=60,
        hours=30 / 3600,
        requests=(req(11), req(13), req(17), LATE),
    )
    out = simulate_fleet(setup)
    assert out["routed_to"] == {"west->near": 2, "west->far": 1}
    assert out["failed"] == 1 and out["slo_attainment"] == pytest.approx(2 / 3, abs=1e-4)
