"""The front door's pure pieces: where a client is (headers), how loaded a plane is (status)."""

from __future__ import annotations

import pytest

from shipit.services.front_door_views import (
    ClientPlaceError,
    PlaneLoad,
    client_place,
    plane_load,
    plane_view,
)

PLANES = (("us-east", -5.0), ("eu-west", 1.0))


def test_offset_header_wins_over_region_and_default() -> None:
    got = client_place(
        {"x-shipit-client-utc-offset": "5.5", "x-shipit-region": "us-east"}, PLANES, 0.0
    )
    assert (got.utc_offset_h, got.source, got.residency) == (
        5.5,
        "x-shipit-client-utc-offset",
        None,
    )


def test_region_names_a_plane_and_the_client_is_where_it_is() -> None:
    got = client_place({"x-shipit-region": "eu-west", "x-shipit-residency": "eu"}, PLANES, -8.0)
    assert (got.utc_offset_h, got.residency, got.source) == (1.0, "eu", "x-shipit-region")


def test_no_header_means_the_front_doors_own_offset() -> None:
    got = client_place({}, PLANES, 9.0)
    assert (got.utc_offset_h, got.source) == (9.0, "default")


@pytest.mark.parametrize("value", ["abc", "15", "-13", "nan", ""])
def test_a_bad_offset_is_named_with_its_value(value: str) -> None:
    with pytest.raises(ClientPlaceError) as err:
        client_place({"x-shipit-client-utc-offset": value}, PLANES, 0.0)
    assert err.value.header == "x-shipit-client-utc-offset"
    assert repr(value) in err.value.message and "-12 to 14" in err.value.message


def test_an_unknown_region_lists_the_planes() -> None:
    with pytest.raises(ClientPlaceError) as err:
        client_place({"x-shipit-region": "mars"}, PLANES, 0.0)
    assert "'mars'" in err.value.message and "us-east, eu-west" in err.value.message


def test_an_empty_residency_is_refused() -> None:
    with pytest.raises(ClientPlaceError) as err:
        client_place({"x-shipit-residency": " "}, PLANES, 0.0)
    assert err.value.header == "x-shipit-residency"


STATUS = {
    "deployments": [
        {
            "name": "chat",
            "queue_depth": 3,
            "replicas": [
                {"id": "chat-0", "state": "ready", "in_flight": 5},
                {"id": "chat-1", "state": "ready", "in_flight": 1},
                {"id": "chat-2", "state": "starting", "in_flight": 0},
            ],
        },
        {"name": "embed", "queue_depth": 0, "replicas": [{"state": "ready", "in_flight": 0}]},
    ]
}


def test_plane_load_counts_ready_replicas_at_their_deployments_concurrency() -> None:
    load = plane_load(STATUS, {"chat": 4, "embed": 2})
    # chat: 2 ready x 4 slots, embed: 1 ready x 2; the starting replica counts nothing
    assert load == PlaneLoad(ready_replicas=3, slots=10, in_flight=6, queued=3)
    assert load.free_slots == 4


def test_plane_load_of_a_plane_with_nothing_ready() -> None:
    load = plane_load({"deployments": [{"name": "chat", "replicas": []}]}, {})
    assert load == PlaneLoad() and load.free_slots == 0


def test_plane_view_counts_requests_opened_since_the_probe() -> None:
    load = PlaneLoad(ready_replicas=1, slots=8, in_flight=2, queued=0)
    busier = plane_view("a", 0.0, frozenset(), serving=True, load=load, opened_since_probe=4)
    assert busier.free_slots == 2
    freer = plane_view("a", 0.0, frozenset(), serving=True, load=load, opened_since_probe=-1)
    assert freer.free_slots == 7
    full = plane_view("a", 0.0, frozenset(), serving=True, load=load, opened_since_probe=20)
    assert full.free_slots == 0
    never_above = plane_view("a", 0.0, frozenset(), serving=True, load=load, opened_since_probe=-9)
    assert never_above.free_slots == 8


def test_the_fleet_sums_its_planes_pools_and_prices_them() -> None:
    from shipit.services.front_door_views import fleet_pools, plane_pools

    east = plane_pools(
        {
            "pools": {
                "pools": {"reserved": {"usd_per_gpu_hour": 2.0}, "spot": {"usd_per_gpu_hour": 1.5}},
                "replicas_by_pool": {"reserved": 2, "on_demand": 0, "spot": 3},
                "preemptions": 4,
                "gpu_failures": 1,
            }
        }
    )
    west = plane_pools(
        {
            "pools": {
                "pools": {"on_demand": {"usd_per_gpu_hour": 4.0}},
                "replicas_by_pool": {"on_demand": 1},
                "preemptions": 0,
            }
        }
    )
    assert plane_pools({"deployments": []}) is None  # a plane without pools
    got = fleet_pools({"east": east, "west": west, "bare": None}, gpus_per_replica=2)
    # 2 GPUs a replica: east 2 x 2 x $2 + 3 x 2 x $1.5 = $17, west 1 x 2 x $4 = $8.
    assert got == {
        "planes_reporting": ["east", "west"],
        "replicas_by_pool": {"on_demand": 1, "reserved": 2, "spot": 3},
        "usd_per_hour": 25.0,
        "preemptions": 4,
        "gpu_failures": 1,
    }
