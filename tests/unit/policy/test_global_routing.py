"""Global routing: nearest serving plane with room, spill-over, residency, full fleets."""

from __future__ import annotations

from shipit.policy.global_routing import (
    GlobalRouteSnapshot,
    GlobalRoutingConfig,
    PlaneView,
    clock_distance_h,
    decide,
    latency_ms,
)

CFG = GlobalRoutingConfig(ms_per_time_zone=5.0)


def plane(name: str, tz: float, free: int = 4, **kw: object) -> PlaneView:
    return PlaneView(name, tz, kw.pop("serving", True), free, **kw)  # type: ignore[arg-type]


US, EU, AP = plane("us-east", -5), plane("eu-west", 1), plane("me-central", 4)


def test_the_clock_is_a_circle() -> None:
    assert clock_distance_h(-5, 1) == 6
    assert clock_distance_h(-10, 12) == 2  # Hawaii to New Zealand, across the date line
    assert latency_ms(-5, 1, 5.0) == 30.0


def test_the_nearest_plane_with_room_wins() -> None:
    d = decide(CFG, GlobalRouteSnapshot(2.0, (US, EU, AP)))
    assert (d.plane, d.reason_code, d.latency_ms) == ("eu-west", "nearest", 5.0)
    assert d.order == ("eu-west", "me-central", "us-east")


def test_a_full_nearest_plane_spills_to_the_next_with_room() -> None:
    full_eu = plane("eu-west", 1, free=0, queued=3, slots=8)
    d = decide(CFG, GlobalRouteSnapshot(2.0, (US, full_eu, AP)))
    assert (d.plane, d.reason_code) == ("me-central", "spilled")
    assert "eu-west (nearest) is full" in d.reason and "+5 ms" in d.reason


def test_a_spill_further_than_the_bound_waits_at_the_nearest() -> None:
    full_eu = plane("eu-west", 1, free=0)
    d = decide(GlobalRoutingConfig(max_spill_ms=10.0), GlobalRouteSnapshot(0.0, (US, full_eu, AP)))
    assert (d.plane, d.reason_code) == ("eu-west", "queued_nearest")


def test_when_all_are_full_the_shortest_queue_per_slot_takes_it() -> None:
    planes = (
        plane("us-east", -5, free=0, queued=2, slots=10),
        plane("eu-west", 1, free=0, queued=9, slots=10),
    )
    d = decide(CFG, GlobalRouteSnapshot(0.0, planes))
    assert (d.plane, d.reason_code) == ("us-east", "all_full")


def test_down_tried_and_out_of_residency_planes_are_never_chosen() -> None:
    planes = (
        plane("us-east", -5, residency=frozenset({"us"})),
        plane("eu-west", 1, serving=False, residency=frozenset({"eu"})),
        plane("eu-north", 2, residency=frozenset({"eu"})),
    )
    d = decide(CFG, GlobalRouteSnapshot(1.0, planes, residency="eu"))
    assert d.plane == "eu-north" and d.order == ("eu-north",)
    none = decide(
        CFG, GlobalRouteSnapshot(1.0, planes, residency="eu", tried=frozenset({"eu-north"}))
    )
    assert none.plane is None and none.reason_code == "no_plane"
    assert "eu-west not serving" in none.reason and "eu-north already tried" in none.reason
    assert "us-east outside residency 'eu'" in none.reason
