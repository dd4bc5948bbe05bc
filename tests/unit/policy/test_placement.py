"""Placement: demand per client region onto planes, nearest first, capacity, price, residency."""

from __future__ import annotations

from shipit.policy.placement import (
    PlacementConfig,
    PlacementSnapshot,
    PlaneCapacity,
    RegionDemand,
    decide,
)

US = PlaneCapacity("us-east", -5, True, capacity=100, usd_per_replica_hour=3.0)
EU = PlaneCapacity(
    "eu-west", 1, True, capacity=100, usd_per_replica_hour=3.0, residency=frozenset({"eu"})
)
AP = PlaneCapacity("ap-south", 5.5, True, capacity=100, usd_per_replica_hour=2.0)


def test_each_region_lands_on_its_nearest_plane() -> None:
    d = decide(
        PlacementConfig(),
        PlacementSnapshot(
            (RegionDemand("americas", -6, 40), RegionDemand("europe", 0, 30)), (US, EU, AP)
        ),
    )
    assert d.reason_code == "placed"
    by = {(a.region, a.plane): (a.replicas, a.reason_code) for a in d.assignments}
    assert by == {("americas", "us-east"): (40, "nearest"), ("europe", "eu-west"): (30, "nearest")}
    us = d.target("us-east")
    assert (us.target, us.min_replicas, us.max_replicas) == (40, 20, 51)
    assert d.target("ap-south").target == 0 and d.target("ap-south").reason_code == "idle"


def test_capacity_runs_out_and_the_rest_spills_to_the_next_nearest() -> None:
    small_us = PlaneCapacity("us-east", -5, True, capacity=25, usd_per_replica_hour=3.0)
    d = decide(
        PlacementConfig(),
        PlacementSnapshot((RegionDemand("americas", -6, 40),), (small_us, EU, AP)),
    )
    assert d.reason_code == "spilled"
    got = [(a.plane, a.replicas, a.reason_code) for a in d.assignments]
    assert got == [("us-east", 25, "nearest"), ("eu-west", 15, "spilled")]
    us = d.target("us-east")  # held at what its pools supply: the rest spills past it
    assert (us.target, us.min_replicas, us.max_replicas, us.reason_code) == (25, 25, 25, "full")
    assert d.target("eu-west").reason_code == "assigned"


def test_residency_pins_a_region_even_when_another_plane_is_nearer() -> None:
    d = decide(
        PlacementConfig(),
        PlacementSnapshot((RegionDemand("gulf", 4, 10, residency="eu"),), (US, EU, AP)),
    )
    assert [(a.plane, a.replicas) for a in d.assignments] == [("eu-west", 10)]


def test_pinned_demand_with_no_room_is_unplaced_not_moved_out_of_its_residency() -> None:
    eu = PlaneCapacity(
        "eu-west", 1, True, capacity=5, usd_per_replica_hour=3.0, residency=frozenset({"eu"})
    )
    d = decide(
        PlacementConfig(),
        PlacementSnapshot((RegionDemand("europe", 0, 8, residency="eu"),), (US, eu)),
    )
    assert d.reason_code == "unplaced"
    assert d.unplaced == (("europe", 3.0),)
    assert {a.plane for a in d.assignments} == {"eu-west"}


def test_pinned_regions_are_served_before_free_ones_take_the_room() -> None:
    eu = PlaneCapacity(
        "eu-west", 1, True, capacity=10, usd_per_replica_hour=3.0, residency=frozenset({"eu"})
    )
    demand = (
        RegionDemand("europe-free", 1, 50),
        RegionDemand("europe-pinned", 1, 8, residency="eu"),
    )
    d = decide(PlacementConfig(), PlacementSnapshot(demand, (US, eu)))
    pinned = [a for a in d.assignments if a.region == "europe-pinned"]
    assert [(a.plane, a.replicas) for a in pinned] == [("eu-west", 8)]
    assert not d.unplaced


def test_a_cheaper_plane_within_the_latency_slack_fills_first() -> None:
    near = PlaneCapacity("near", 0, True, capacity=100, usd_per_replica_hour=4.0)
    cheap = PlaneCapacity("cheap", 2, True, capacity=100, usd_per_replica_hour=2.0)
    snap = PlacementSnapshot((RegionDemand("r", 0, 10),), (near, cheap))
    strict = decide(PlacementConfig(latency_slack_ms=0), snap)
    slack = decide(PlacementConfig(latency_slack_ms=10), snap)
    assert [(a.plane, a.reason_code) for a in strict.assignments] == [("near", "nearest")]
    assert [(a.plane, a.reason_code) for a in slack.assignments] == [("cheap", "cheaper")]


def test_a_plane_not_serving_gets_no_demand_and_keeps_its_floor() -> None:
    down = PlaneCapacity(
        "us-east", -5, False, capacity=100, usd_per_replica_hour=3.0, min_replicas=4
    )
    d = decide(
        PlacementConfig(), PlacementSnapshot((RegionDemand("americas", -6, 40),), (down, EU))
    )
    t = d.target("us-east")
    assert (t.target, t.min_replicas, t.max_replicas, t.reason_code) == (4, 4, 4, "not_serving")
    assert [(a.plane, a.reason_code) for a in d.assignments] == [("eu-west", "nearest")]


def test_the_plane_floor_holds_under_little_demand() -> None:
    us = PlaneCapacity("us-east", -5, True, capacity=100, usd_per_replica_hour=3.0, min_replicas=6)
    d = decide(PlacementConfig(), PlacementSnapshot((RegionDemand("americas", -5, 2),), (us,)))
    t = d.target("us-east")
    assert (t.target, t.min_replicas) == (6, 6)
