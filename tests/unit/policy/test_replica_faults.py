"""Spot notice -> drain, replace, stop at the deadline; GPU failure -> cordon, stop, replace."""

from __future__ import annotations

from shipit.policy.node_health import NodeHealthConfig, NodeHealthState
from shipit.policy.replica_faults import (
    FaultAction as A,
)
from shipit.policy.replica_faults import (
    FaultConfig,
    FaultSnapshot,
    GpuFailure,
    SpotNotice,
    decide,
)

NODES = tuple(f"n{i}" for i in range(8))


def test_a_spot_notice_drains_and_replaces_at_once_and_stops_at_the_deadline() -> None:
    snap = FaultSnapshot(100.0, NODES, notices=(SpotNotice("r1", "n1", 220.0),))
    d, _ = decide(FaultConfig(), snap, NodeHealthState())
    got = [(s.target, s.action, s.at_s, s.reason_code) for s in d.steps]
    assert got == [
        ("r1", A.DRAIN, 100.0, "spot_notice"),
        ("r1", A.REPLACE, 100.0, "spot_notice"),
        ("r1", A.STOP, 220.0, "preempted"),
    ]
    assert d.targets(A.CORDON) == ()  # a pre-emption is not the node's fault


def test_replacement_can_wait_for_the_preemption() -> None:
    snap = FaultSnapshot(100.0, NODES, notices=(SpotNotice("r1", "n1", 220.0),))
    d, _ = decide(FaultConfig(replace_on_notice=False), snap, NodeHealthState())
    assert [s.at_s for s in d.steps if s.action is A.REPLACE] == [220.0]


def test_a_detected_gpu_failure_cordons_the_node_stops_and_replaces_the_replica() -> None:
    snap = FaultSnapshot(160.0, NODES, failures=(GpuFailure("r2", "n2", 100.0),))
    d, _ = decide(FaultConfig(), snap, NodeHealthState())
    assert d.targets(A.CORDON) == ("n2",)
    assert d.targets(A.STOP) == ("r2",) and d.targets(A.REPLACE) == ("r2",)
    stop = next(s for s in d.steps if s.action is A.STOP)
    assert stop.reason_code == "gpu_failed" and "detected 60s later" in stop.reason


def test_past_the_cordon_cap_the_node_stays_schedulable_but_the_replica_is_replaced() -> None:
    cfg = FaultConfig(node_health=NodeHealthConfig(max_cordoned_fraction=0.25))
    snap = FaultSnapshot(
        50.0, NODES, cordoned=frozenset({"n0", "n1"}), failures=(GpuFailure("r3", "n3", 0.0),)
    )
    d, _ = decide(cfg, snap, NodeHealthState())
    cordons = [(s.target, s.reason_code) for s in d.steps if s.action is A.CORDON]
    assert cordons == [("n3", "cordon_cap_reached")]
    assert d.targets(A.REPLACE) == ("r3",)


def test_nothing_to_do() -> None:
    d, _ = decide(FaultConfig(), FaultSnapshot(0.0, NODES), NodeHealthState())
    assert (d.steps, d.reason_code) == ((), "steady")
