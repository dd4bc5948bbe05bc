"""The lifecycle policy: crash reaping with back-off, never-ready replacement, drained stops."""

from __future__ import annotations

import pytest

from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.lifecycle import (
    LifecycleAction,
    LifecycleConfig,
    LifecycleSnapshot,
    LifecycleState,
    decide,
    overdue,
)

CONFIG = LifecycleConfig(startup_timeout_s=60.0, drain_timeout_s=30.0)


def rec(
    rid: str, state: ReplicaState = ReplicaState.READY, since_s: float = 0.0, in_flight: int = 0
) -> ReplicaRecord:
    return ReplicaRecord(
        rid, f"http://{rid}", state=state, state_since_s=since_s, in_flight=in_flight
    )


def test_consecutive_crashes_back_off_1_2_4_8_16_30_60_then_stay_at_60() -> None:
    state, now, holds = LifecycleState(), 0.0, []
    for i in range(9):
        rid = f"r{i}"
        snapshot = LifecycleSnapshot(now, (rec(rid),), dead=frozenset({rid}))
        decision, state = decide(CONFIG, snapshot, state)
        assert decision.ids(LifecycleAction.REAP) == (rid,)
        assert decision.reason_code == "crashed"
        assert decision.starts_held_until_s is not None
        holds.append(decision.starts_held_until_s - now)
        now += 100.0  # each crash after the previous hold has passed
    assert holds == [1, 2, 4, 8, 16, 30, 60, 60, 60]
    assert state.crashes == 9


def test_starts_are_held_until_the_back_off_passes() -> None:
    decision, state = decide(
        CONFIG, LifecycleSnapshot(10.0, (rec("a"),), dead=frozenset({"a"})), LifecycleState()
    )
    assert decision.starts_held(10.0) and decision.starts_held(10.9)
    assert not decision.starts_held(11.0)
    # The next tick, still inside the hold: nothing to do, but starts stay held.
    decision, state = decide(CONFIG, LifecycleSnapshot(10.5, ()), state)
    assert (decision.reason_code, decision.starts_held_until_s) == ("crash_backoff", 11.0)
    assert "starts held back" in decision.reason
    decision, state = decide(CONFIG, LifecycleSnapshot(11.0, ()), state)
    assert decision.starts_held_until_s is None and decision.reason_code == "steady"
    assert state.crashes == 1, "the streak lasts until a replica comes up"


def test_a_replica_that_comes_up_ends_the_crash_streak() -> None:
    state = LifecycleState(crashes=4)
    snapshot = LifecycleSnapshot(0.0, (rec("b"), rec("c")), dead=frozenset({"c"}), came_up=("b",))
    decision, state = decide(CONFIG, snapshot, state)
    assert state.crashes == 1
    assert decision.starts_held_until_s == 1.0


def test_a_replica_being_stopped_is_not_reaped_or_replaced_again() -> None:
    snapshot = LifecycleSnapshot(
        500.0,
        (rec("a", ReplicaState.DRAINING), rec("b", ReplicaState.STARTING)),
        dead=frozenset({"a"}),
        stopping=frozenset({"a", "b"}),
    )
    decision, state = decide(CONFIG, snapshot, LifecycleState())
    assert decision.steps == () and state == LifecycleState()


@pytest.mark.parametrize(
    ("replica", "now", "code"),
    [
        (rec("a", ReplicaState.STARTING, since_s=0.0), 60.0, None),  # exactly the timeout
        (rec("a", ReplicaState.STARTING, since_s=0.0), 60.5, "never_ready"),
        (rec("a", ReplicaState.UNHEALTHY, since_s=10.0), 71.0, "unhealthy_too_long"),
        (rec("a", ReplicaState.UNHEALTHY, since_s=10.0), 69.0, None),
        (rec("a", ReplicaState.READY, since_s=0.0), 900.0, None),
        (rec("a", ReplicaState.DRAINING, since_s=0.0, in_flight=1), 10.0, None),
    ],
)
def test_never_ready_and_long_unhealthy_replicas_are_replaced(
    replica: ReplicaRecord, now: float, code: str | None
) -> None:
    assert overdue(replica, now, CONFIG.startup_timeout_s) == code
    decision, _ = decide(CONFIG, LifecycleSnapshot(now, (replica,)), LifecycleState())
    expected = ("a",) if code else ()
    assert decision.ids(LifecycleAction.REPLACE) == expected
    if code:
        assert decision.reason_code == code and "startup_timeout_s 60" in decision.reason


@pytest.mark.parametrize(
    ("in_flight", "now", "code"),
    [(0, 1.0, "drained"), (2, 29.0, None), (2, 30.0, "drain_timeout")],
)
def test_draining_replicas_stop_once_drained_or_timed_out(
    in_flight: int, now: float, code: str | None
) -> None:
    replica = rec("a", ReplicaState.DRAINING, since_s=0.0, in_flight=in_flight)
    decision, _ = decide(CONFIG, LifecycleSnapshot(now, (replica,)), LifecycleState())
    assert decision.ids(LifecycleAction.STOP) == (("a",) if code else ())
    assert decision.reason_code == (code or "steady")


def test_a_dead_replica_is_reaped_whatever_its_state() -> None:
    replicas = (rec("a", ReplicaState.STARTING, since_s=0.0), rec("b", ReplicaState.DRAINING))
    snapshot = LifecycleSnapshot(1000.0, replicas, dead=frozenset({"a", "b"}))
    decision, state = decide(CONFIG, snapshot, LifecycleState())
    assert decision.ids(LifecycleAction.REAP) == ("a", "b")
    assert decision.ids(LifecycleAction.REPLACE) == () and state.crashes == 2
    assert decision.starts_held_until_s == 1002.0  # the second crash's 2 s
