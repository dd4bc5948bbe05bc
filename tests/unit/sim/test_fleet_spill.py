"""Spill-over between planes and the wait of fixed-length requests in the fleet simulator,
against figures worked by hand (Erlang B/C for 4 slots)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shipit.capacity.queueing import erlang_c
from shipit.config.fleet import parse_fleet_config
from shipit.sim.fleet_model import queue_tick
from shipit.sim.fleet_setup import fleet_setup
from shipit.sim.regions import simulate_fleet

# A replica of 4 slots; a request is 200 prompt tokens (10 ms of prefill at 20,000 tokens/s)
# and 64 output tokens (0.5 s at 128 tokens/s): 0.51 s a request, 4 / 0.51 = 7.84/s a replica.
REPLICA = {"concurrency": 4, "prefill_tokens_per_s": 20000, "decode_tokens_per_s": 128}
ONE_REPLICA = {
    "min_replicas": 1,
    "max_replicas": 1,
    "pools": {"on_demand": {"usd_per_gpu_hour": 4.0}},
}
WEST = {"name": "west", "utc_offset_h": -5, **ONE_REPLICA}
EAST = {"name": "east", "utc_offset_h": 1, **ONE_REPLICA}  # 6 h from west: +30 ms


def run(regions: list[dict[str, Any]], rps: float, *, hours: float = 0.5) -> dict[str, Any]:
    traffic = {
        "regions": regions,
        "replica": REPLICA,
        "ttft_slo_ms": 200,
        "input_len": 200,
        "output_len": 64,
    }
    cfg = parse_fleet_config({"fleet": {"traffic": traffic, "planes": [WEST, EAST]}})
    setup = fleet_setup(cfg, rates_rps=(rps,), step_s=60.0, hours=hours, seed=3, sample_s=600)
    return simulate_fleet(setup)


def test_fixed_length_requests_wait_half_as_long_as_exponential_ones() -> None:
    # Allen-Cunneen: the tail's rate is (c/S - lambda) / ((ca^2 + cs^2) / 2); Poisson arrivals
    # (ca^2 = 1) and one service time for all (cs^2 = 0) give (10 - 8) / 0.5 = 4/s
    q, _, _ = queue_tick(
        slots=10,
        arrivals=80,
        backlog=0,
        service_s=1.0,
        dt=10,
        queue_timeout_s=60,
        variability=0.5,
    )
    assert q.decay_per_s == pytest.approx(4.0)
    assert q.met_fraction(0.5, found_full=True) == pytest.approx(1 - math.exp(-2.0))
    assert q.met_fraction(0.5, found_full=False) == 1.0  # it found a free slot
    assert erlang_c(10, 8.0) == pytest.approx(0.409, abs=0.001)


def test_a_plane_below_its_slots_keeps_its_own_region_and_spills_only_when_full() -> None:
    # west alone, at 3/s: 1.53 of its 4 slots busy. A request spills only when it finds all 4
    # busy (Erlang C(4, 1.5) ~ 0.075), so ~7% go east, not everything above a 'room' of 1 slot.
    out = run([{"name": "americas", "utc_offset_h": -5, "share": 1.0}], rps=3.0)
    spilled = out["routed_to"].get("americas->east", 0.0)
    assert spilled < 0.12 * out["requests"]
    assert spilled > 0.02 * out["requests"]
    assert out["slo_attainment"] > 0.99  # a spilled request found a free slot: 10 + 30 ms


def test_two_busy_planes_spill_to_each_other_alike_and_mostly_meet_the_slo() -> None:
    # 9/s, half from each side: 4.5/s a plane, 2.3 of 4 slots busy (57%). Without spill-over
    # C(4, 2.3) = 0.255 wait, and P(wait > 190 ms) = 0.255 exp(-(7.84 - 4.5) 0.19 / 0.5) = 7%;
    # spilling to a free slot 30 ms away only helps: over 92% meet the 200 ms SLO.
    regions = [
        {"name": "americas", "utc_offset_h": -5, "share": 0.5},
        {"name": "europe", "utc_offset_h": 1, "share": 0.5},
    ]
    out = run(regions, rps=9.0)
    to = out["routed_to"]
    a_out, e_out = to.get("americas->east", 0.0), to.get("europe->west", 0.0)
    n = out["requests"]
    assert a_out < 0.25 * n / 2 and e_out < 0.25 * n / 2  # each plane keeps most of its own
    assert abs(a_out - e_out) < 0.3 * max(a_out, e_out)  # the two spill alike
    assert out["slo_attainment"] > 0.92
    for region in out["regions"].values():
        assert region["slo_attainment"] > 0.92


PLANES = {  # (UTC offset, serving, residency, slots, queued)
    "west": (-5.0, True, frozenset(), 8, 0),
    "east": (1.0, True, frozenset(), 8, 0),
}


def test_a_requests_chain_is_its_nearest_then_the_next_then_where_it_queues() -> None:
    from shipit.policy.global_routing import GlobalRoutingConfig
    from shipit.sim.fleet_traffic import route_chain, split

    steps, asked = route_chain(GlobalRoutingConfig(), (-5.0, None), PLANES)
    assert asked == 3
    assert [(s.plane, s.reason_code, s.queues) for s in steps] == [
        ("west", "nearest", False),
        ("east", "spilled", False),
        ("west", "all_full", True),  # both full, queues alike: the nearer
    ]
    # west full 30% of the time, east 20%: 70% west at once, 0.3 x 0.8 = 24% east, 6% queue
    shares = [share for _, share in split(steps, {"west": 0.3, "east": 0.2})]
    assert shares == pytest.approx([0.7, 0.24, 0.06])


def test_what_finds_every_plane_full_fills_the_shortest_queue_not_one_plane() -> None:
    from shipit.policy.global_routing import GlobalRoutingConfig
    from shipit.sim.fleet_traffic import fill_all_full

    # 16 requests, both planes full with 4 waiting at west: slices of 2 go east until its
    # queue passes west's, then alternate: east 10, west 6 (one batch would send all 16 east)
    queue = {"west": 4.0, "east": 0.0}
    pieces, asked = fill_all_full(GlobalRoutingConfig(), (-5.0, None), PLANES, queue, 16.0)
    got = {p: sum(n for q, _, n in pieces if q == p) for p in PLANES}
    assert asked == 8 and got == {"west": 6.0, "east": 10.0}
    assert queue == {"west": 10.0, "east": 10.0}
