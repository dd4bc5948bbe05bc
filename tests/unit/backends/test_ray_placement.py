"""The Ray backend's pure parts: resources a replica asks for, which node it goes to (spread,
capacity pools, dead nodes, room left), the replica's flags and the errors a user reads."""

from __future__ import annotations

import pytest

from shipit.backends.base import ReplicaSpec
from shipit.backends.ray_placement import (
    NodeView,
    RayBackendError,
    choose_node,
    demand,
    node_views,
    placement_timed_out,
    pool_resource,
    replica_args,
    split_address,
    unreachable,
)
from shipit.config.ray_backend import RayBackendConfig


def node(node_id: str, alive: bool = True, **resources: float) -> NodeView:
    res = {k.replace("__", ":"): v for k, v in resources.items()}
    return NodeView(node_id, alive, tuple(sorted(res.items())), f"10.0.0.{node_id[-1]}")


HEAD = node("n1", CPU=4, pool__gpu=2)
W1 = node("n2", CPU=4, pool__gpu=2)
W2 = node("n3", CPU=4)  # no pool:gpu: never chosen for the gpu pool


def test_demand_maps_settings_to_ray_resources() -> None:
    cfg = RayBackendConfig(
        pool="spot", num_cpus=2, num_gpus=1, memory_bytes=1000, resources={"H100": 1}
    )
    assert demand(cfg) == {"CPU": 2.0, "GPU": 1.0, "memory": 1000.0, "pool:spot": 1.0, "H100": 1}
    assert pool_resource("spot") == "pool:spot"


def test_demand_leaves_out_zero_amounts_and_no_pool() -> None:
    assert demand(RayBackendConfig(num_cpus=0)) == {}
    assert demand(RayBackendConfig()) == {"CPU": 1.0}


def test_a_node_without_the_pool_resource_gets_no_replica() -> None:
    want = {"pool:gpu": 1.0}
    placements = []
    ours: dict[str, int] = {}
    used: dict[str, dict[str, float]] = {}
    for _ in range(4):
        p = choose_node([W2, HEAD, W1], want, ours, used)
        assert p.node_id is not None
        placements.append(p.node_id)
        ours[p.node_id] = ours.get(p.node_id, 0) + 1
        used.setdefault(p.node_id, {})["pool:gpu"] = used.get(p.node_id, {}).get("pool:gpu", 0) + 1
    assert placements == ["n1", "n2", "n1", "n2"]  # spread, and never n3
    full = choose_node([W2, HEAD, W1], want, ours, used)
    assert full.node_id is None
    assert "no alive node has room" in full.reason and "{pool:gpu: 1}" in full.reason


def test_spread_goes_to_the_node_with_fewest_of_the_deployments_replicas() -> None:
    p = choose_node([HEAD, W1], {"CPU": 1.0}, {"n1": 2, "n2": 1})
    assert p.node_id == "n2"
    assert "runs 1 of the deployment's replicas" in p.reason and "2 nodes" in p.reason


def test_dead_nodes_are_skipped() -> None:
    dead_w1 = node("n2", alive=False, CPU=4, pool__gpu=2)
    p = choose_node([HEAD, dead_w1], {"pool:gpu": 1.0}, {"n1": 1})
    assert p.node_id == "n1"


def test_a_node_to_avoid_is_taken_only_when_nothing_else_fits() -> None:
    assert (
        choose_node([HEAD, W1], {"pool:gpu": 1.0}, {"n2": 1}, avoid=frozenset({"n1"})).node_id
        == "n2"
    )
    only = choose_node([HEAD, W2], {"pool:gpu": 1.0}, {}, avoid=frozenset({"n1"}))
    assert only.node_id == "n1"


def test_room_counts_what_our_other_replicas_hold() -> None:
    # n1 has 4 CPUs, 3 held by another deployment's replicas: a 2-CPU replica no longer fits.
    p = choose_node([HEAD, W2], {"CPU": 2.0}, {}, {"n1": {"CPU": 3.0}})
    assert p.node_id == "n3"


def test_node_views_read_ray_nodes_records() -> None:
    raw = [
        {
            "NodeID": "abc",
            "Alive": True,
            "NodeManagerAddress": "10.0.0.9",
            "Resources": {"CPU": 2.0, "pool:gpu": 1.0},
        },
        {"NodeID": "def", "Alive": False, "Resources": {}},
    ]
    views = node_views(raw)
    assert views[0] == NodeView("abc", True, (("CPU", 2.0), ("pool:gpu", 1.0)), "10.0.0.9")
    assert views[1].alive is False and views[1].total("CPU") == 0.0


def test_replica_args() -> None:
    spec = ReplicaSpec("d", "m", simulate="H100:m", extra_args=("--x", "1"), drain_timeout_s=7)
    assert replica_args(spec) == [
        "--model", "m", "--drain-timeout-s", "7", "--simulate", "H100:m", "--x", "1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("head.example:1234", ("head.example", 1234)),
        ("[::1]:6379", ("::1", 6379)),
        ("auto", None),
        ("ray://head:10001", None),
    ],
)
def test_split_address(address: str, expected: tuple[str, int] | None) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("bad", ["head", "head:port", ":6379"])
def test_a_malformed_address_says_what_is_expected(bad: str) -> None:
    with pytest.raises(RayBackendError) as exc:
        split_address(bad)
    assert repr(bad) in exc.value.message and "host:port" in exc.value.message


def test_error_messages_name_the_value_and_what_to_do() -> None:
    msg = unreachable("10.0.0.2:6379", "Connection refused").message
    assert "10.0.0.2:6379" in msg and "Connection refused" in msg
    assert "ray start --head" in msg and "--ray-address" in msg
    msg = placement_timed_out("chat", {"pool:gpu": 1.0}, 120, "why").message
    assert "'chat'" in msg and "{pool:gpu: 1}" in msg and "120s" in msg
    assert "placement_timeout_s" in msg
