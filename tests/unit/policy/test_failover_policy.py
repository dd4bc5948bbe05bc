"""Plane failover under both postures: thresholds, promotion, no flapping back."""

from __future__ import annotations

from shipit.policy.failover import (
    FailoverDecision,
    FailoverPolicyConfig,
    FailoverSnapshot,
    FailoverState,
    PlaneProbe,
    PlaneRole,
    Posture,
    decide,
    initial_state,
)

AA = FailoverPolicyConfig(Posture.ACTIVE_ACTIVE, fail_after=3, recover_after=2)
AP = FailoverPolicyConfig(Posture.ACTIVE_PASSIVE, fail_after=3, recover_after=2)


def run(
    config: FailoverPolicyConfig, state: FailoverState, rounds: list[dict[str, bool]]
) -> tuple[list[FailoverDecision], FailoverState]:
    out = []
    for t, probes in enumerate(rounds):
        snap = FailoverSnapshot(
            float(t), tuple(PlaneProbe(n, ok, "refused") for n, ok in probes.items())
        )
        d, state = decide(config, snap, state)
        out.append(d)
    return out, state


def test_active_active_a_plane_is_out_only_after_the_threshold_and_back_after_its_own() -> None:
    state = initial_state([("a", PlaneRole.ACTIVE), ("b", PlaneRole.ACTIVE)])
    down = {"a": False, "b": True}
    ds, state = run(AA, state, [down, down])
    assert [d.serving for d in ds] == [("a", "b"), ("a", "b")]  # two lost probes: still in
    ds, state = run(AA, state, [down])
    assert ds[0].serving == ("b",) and ds[0].changes[0].reason_code == "out"
    assert "3 failed probes in a row: refused" in ds[0].changes[0].reason
    up = {"a": True, "b": True}
    ds, state = run(AA, state, [up, up])
    assert [d.serving for d in ds] == [("b",), ("a", "b")]
    assert ds[1].changes[0].reason_code == "back"


def test_active_passive_promotes_the_standby_and_keeps_it_when_the_active_returns() -> None:
    state = initial_state([("a", PlaneRole.ACTIVE), ("s", PlaneRole.STANDBY)])
    ds, state = run(AP, state, [{"a": True, "s": True}])
    assert ds[0].serving == ("a",)  # the standby serves nothing while the active is up
    ds, state = run(AP, state, [{"a": False, "s": True}] * 3)
    assert ds[-1].serving == ("s",)
    assert [c.reason_code for c in ds[-1].changes] == ["out", "promoted"]
    assert "standby s promoted" in ds[-1].reason
    ds, state = run(AP, state, [{"a": True, "s": True}] * 2)
    assert ds[-1].serving == ("s",)
    assert [c.reason_code for c in ds[-1].changes] == ["back", "returned_as_standby"]
    assert state.status("a").role is PlaneRole.STANDBY


def test_active_passive_with_a_second_active_does_not_promote() -> None:
    state = initial_state(
        [("a", PlaneRole.ACTIVE), ("b", PlaneRole.ACTIVE), ("s", PlaneRole.STANDBY)]
    )
    ds, state = run(AP, state, [{"a": False, "b": True, "s": True}] * 3)
    assert ds[-1].serving == ("b",) and state.status("s").role is PlaneRole.STANDBY
    ds, state = run(AP, state, [{"a": True, "b": True, "s": True}] * 2)
    assert ds[-1].serving == ("a", "b")  # no promotion happened: a rejoins as active


def test_nothing_up_is_said() -> None:
    state = initial_state([("a", PlaneRole.ACTIVE), ("s", PlaneRole.STANDBY)])
    ds, _ = run(AP, state, [{"a": False, "s": False}] * 3)
    assert ds[-1].serving == () and ds[-1].reason_code == "no_plane"
    assert "a (3 failed)" in ds[-1].reason and "s (3 failed)" in ds[-1].reason
