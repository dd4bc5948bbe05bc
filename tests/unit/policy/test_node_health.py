from shipit.policy.node_health import (
    NodeFailure,
    NodeHealthConfig,
    NodeHealthSnapshot,
    NodeHealthState,
    decide,
    hardware_looking,
)

NODES = ("n1", "n2", "n3", "n4")


def fail(node: str, at: float, reason: str = "Error", hw: bool = False) -> NodeFailure:
    return NodeFailure(node, f"r-{node}-{at}", at, reason, hw)


def test_repeated_failures_on_one_node_cordon_it_after_the_threshold() -> None:
    cfg = NodeHealthConfig(failures_to_cordon=3)
    state = NodeHealthState()
    d, state = decide(
        cfg, NodeHealthSnapshot(1.0, NODES, failures=(fail("n1", 1), fail("n1", 2))), state
    )
    assert d.cordon == () and d.reason_code == "healthy"
    d, state = decide(
        cfg, NodeHealthSnapshot(3.0, NODES, failures=(fail("n1", 3), fail("n2", 3))), state
    )
    assert [c.node for c in d.cordon] == ["n1"]
    assert d.cordon[0].reason_code == "repeated_failures"
    assert [f.node for f in state.failures] == ["n2"]  # n1's failures are forgotten once cordoned


def test_failures_outside_the_window_do_not_count() -> None:
    cfg = NodeHealthConfig(failures_to_cordon=2, window_s=10)
    _, state = decide(
        cfg, NodeHealthSnapshot(0.0, NODES, failures=(fail("n1", 0),)), NodeHealthState()
    )
    d, _ = decide(cfg, NodeHealthSnapshot(20.0, NODES, failures=(fail("n1", 20),)), state)
    assert d.cordon == ()


def test_one_xid_like_failure_cordons_at_once() -> None:
    assert hardware_looking("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus")
    assert not hardware_looking("OOMKilled")
    d, _ = decide(
        NodeHealthConfig(),
        NodeHealthSnapshot(1.0, NODES, failures=(fail("n2", 1, hw=True),)),
        NodeHealthState(),
    )
    assert [(c.node, c.reason_code) for c in d.cordon] == [("n2", "hardware_error")]


def test_never_cordons_more_than_the_configured_share() -> None:
    cfg = NodeHealthConfig(hardware_failures_to_cordon=1, max_cordoned_fraction=0.5)
    snap = NodeHealthSnapshot(
        1.0,
        NODES,
        cordoned=frozenset({"n4"}),
        failures=(fail("n1", 1, hw=True), fail("n2", 1, hw=True)),
    )
    d, state = decide(cfg, snap, NodeHealthState())
    assert [c.node for c in d.cordon] == ["n1"]  # 2 of 4 at most: n4 and n1
    assert d.held == ("n2",)
    assert [f.node for f in state.failures] == ["n2"]  # kept: cordoned later when there is room
    d, _ = decide(cfg, NodeHealthSnapshot(2.0, NODES, cordoned=frozenset({"n4", "n1"})), state)
    assert d.cordon == () and d.reason_code == "cordon_cap_reached"
