"""Admission and dispatch as pure decisions: offer (admit, shed, refuse), the cold-start hold,
deadlines, which waiter a free slot goes to, failover exclusion, and giving up (503 vs 504)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipit.config.gateway import QueueingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.admission import (
    DispatchSnapshot,
    ExclusionSnapshot,
    GiveUpSnapshot,
    OfferSnapshot,
    QueueState,
    dispatch,
    exclusion,
    give_up,
    offer,
)


def cfg(**kw: Any) -> QueueingConfig:
    return QueueingConfig.model_validate(kw)


def rep(rid: str, in_flight: int = 0, **kw: Any) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=1, **kw)


def fill(config: QueueingConfig, *items: tuple[str, int], now: float = 0.0) -> QueueState:
    state = QueueState()
    for rid, prio in items:
        decision, state = offer(config, OfferSnapshot(now, rid, prio), state)
        assert decision.admitted
    return state


def ids(state: QueueState) -> list[str]:
    return [e.request_id for e in state.entries]


# ----- offer --------------------------------------------------------------------------------


def test_priority_then_fifo() -> None:
    state = fill(cfg(max_queue=10), ("a", 1), ("b", 0), ("c", 1), ("d", 0))
    assert ids(state) == ["b", "d", "a", "c"]


def test_offer_returns_a_new_state_and_leaves_the_old_one() -> None:
    before = fill(cfg(), ("a", 0))
    _, after = offer(cfg(), OfferSnapshot(0.0, "b", 0), before)
    assert ids(before) == ["a"] and ids(after) == ["a", "b"]


@pytest.mark.parametrize(
    ("prio", "admitted", "code", "status", "shed", "order"),
    [
        (1, False, "queue_full", 429, None, ["a", "b"]),  # equal priority: refused
        (2, False, "queue_full", 429, None, ["a", "b"]),  # worse: refused
        (0, True, "shed_lower_priority", None, "b", ["vip", "a"]),  # better: the latest worst goes
    ],
)
def test_full_queue_refuses_or_sheds(
    prio: int, admitted: bool, code: str, status: int | None, shed: str | None, order: list[str]
) -> None:
    config = cfg(max_queue=2, retry_after_s=3)
    state = fill(config, ("a", 1), ("b", 1))
    d, state = offer(config, OfferSnapshot(0.0, "vip", prio), state)
    assert (d.admitted, d.reason_code, d.status) == (admitted, code, status)
    assert (d.shed.request_id if d.shed else None) == shed
    assert d.retry_after_s == (None if admitted else 3)
    assert ids(state) == order


def test_zero_queue_refuses_everything() -> None:
    d, state = offer(cfg(max_queue=0), OfferSnapshot(0.0, "a", 0), QueueState())
    assert (d.admitted, d.status, len(state)) == (False, 429, 0)


@pytest.mark.parametrize(
    ("routable", "deadline", "wait_s", "cold_hold", "bounded_by_hold"),
    [
        (1, None, 60.0, False, True),  # queue_timeout_s
        (0, None, 120.0, True, True),  # no replica routable: held for the cold start
        (0, 5.0, 5.0, True, False),  # the deadline comes first
        (1, 100.0, 60.0, False, True),  # the queue timeout comes first
    ],
)
def test_how_long_a_request_may_wait(
    routable: int, deadline: float | None, wait_s: float, cold_hold: bool, bounded_by_hold: bool
) -> None:
    config = cfg(queue_timeout_s=60, cold_start_hold_s=120)
    snap = OfferSnapshot(0.0, "a", 0, deadline_s=deadline, routable=routable)
    d, state = offer(config, snap, QueueState())
    assert (d.wait_s, d.cold_hold) == (wait_s, cold_hold)
    entry = state.get("a")
    assert entry is not None and (entry.wait_s, entry.bounded_by_hold) == (wait_s, bounded_by_hold)


def test_a_past_deadline_is_refused_with_504() -> None:
    d, state = offer(cfg(), OfferSnapshot(5.0, "late", 0, deadline_s=5.0), QueueState())
    assert (d.admitted, d.reason_code, d.status, len(state)) == (False, "deadline_passed", 504, 0)


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40), st.integers(0, 8))
def test_queue_never_exceeds_bound_and_stays_in_order(
    ops: list[tuple[int, bool]], bound: int
) -> None:
    config = cfg(max_queue=bound)
    state = QueueState()
    for i, (prio, take_head) in enumerate(ops):
        _, state = offer(config, OfferSnapshot(0.0, str(i), prio), state)
        assert len(state) <= bound
        if take_head and state.entries:
            state = state.without(state.entries[0].request_id)
    assert list(state.entries) == sorted(state.entries)


# ----- failover exclusion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fleet", "exclude", "avoid", "code"),
    [
        ([rep("a"), rep("b")], frozenset(), frozenset(), "none"),
        ([rep("a"), rep("b", 1)], frozenset({"a"}), frozenset({"a"}), "avoid_failed"),  # b busy
        (
            [rep("a"), rep("b", state=ReplicaState.STARTING)],
            frozenset({"a"}),
            frozenset(),
            "only_failed_left",
        ),
        (
            [rep("a"), rep("b", ejected_until_s=9.0)],
            frozenset({"a"}),
            frozenset(),
            "only_failed_left",
        ),
    ],
)
def test_exclusion_avoids_failed_replicas_unless_nothing_else_is_routable(
    fleet: list[ReplicaRecord], exclude: frozenset[str], avoid: frozenset[str], code: str
) -> None:
    d = exclusion(ExclusionSnapshot(1.0, exclude, tuple(fleet)))
    assert (d.avoid, d.reason_code) == (avoid, code)


# ----- dispatch -----------------------------------------------------------------------------------


def test_dispatch_names_the_best_waiter_when_a_slot_is_free() -> None:
    config = cfg()
    state = fill(config, ("low", 2), ("high", 0))
    d, after = dispatch(config, DispatchSnapshot(0.0, (rep("a"),)), state)
    assert (d.reason_code, d.entry.request_id if d.entry else None) == ("next_waiter", "high")
    assert after == state  # it stays queued until the driver grants it


@pytest.mark.parametrize(
    ("fleet", "code"),
    [
        ((rep("a", 1),), "no_free_slot"),
        ((rep("a", state=ReplicaState.STARTING),), "no_free_slot"),
        ((), "no_free_slot"),
    ],
)
def test_dispatch_waits_without_a_free_slot(fleet: tuple[ReplicaRecord, ...], code: str) -> None:
    state = fill(cfg(), ("x", 0))
    d, _ = dispatch(cfg(), DispatchSnapshot(0.0, fleet), state)
    assert (d.reason_code, d.entry) == (code, None)


def test_dispatch_passes_over_a_waiter_that_only_avoided_replicas_could_take() -> None:
    config = cfg()
    state = QueueState()
    _, state = offer(config, OfferSnapshot(0.0, "retry", 0, exclude=frozenset({"a"})), state)
    _, state = offer(config, OfferSnapshot(0.0, "other", 1), state)
    fleet = (rep("a"), rep("b", 1))  # a is free but failed "retry"; b is routable but busy
    d, _ = dispatch(config, DispatchSnapshot(0.0, fleet), state)
    assert d.entry is not None and d.entry.request_id == "other"
    assert d.passed_over == ("retry",)
    # once b frees up, the retry goes first, told to avoid a
    d, _ = dispatch(config, DispatchSnapshot(0.0, (rep("a"), rep("b"))), state)
    assert d.entry is not None and (d.entry.request_id, d.avoid) == ("retry", frozenset({"a"}))


def test_dispatch_skips_waiters_routing_could_not_place_this_pass() -> None:
    state = fill(cfg(), ("x", 0), ("y", 0))
    d, _ = dispatch(cfg(), DispatchSnapshot(0.0, (rep("a"),), tried=frozenset({"x"})), state)
    assert d.entry is not None and d.entry.request_id == "y"
    d, _ = dispatch(cfg(), DispatchSnapshot(0.0, (rep("a"),), tried=frozenset({"x", "y"})), state)
    assert (d.reason_code, d.entry) == ("none_placeable", None)


def test_dispatch_expires_deadlines_first() -> None:
    config = cfg()
    state = QueueState()
    for rid, deadline in [("a", 2.0), ("b", 9.0), ("c", None)]:
        _, state = offer(config, OfferSnapshot(0.0, rid, 0, deadline_s=deadline), state)
    assert state.next_deadline_s() == 2.0
    d, after = dispatch(config, DispatchSnapshot(3.0, (rep("r", 1),)), state)
    assert [e.request_id for e in d.expired] == ["a"] and ids(after) == ["b", "c"]
    assert after.position("b") == 0 and after.position("a") is None


def test_dispatch_on_an_empty_queue() -> None:
    d, _ = dispatch(cfg(), DispatchSnapshot(0.0, (rep("a"),)), QueueState())
    assert (d.reason_code, d.entry) == ("empty", None)


# ----- give up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routable", "starting", "deadline", "status", "code", "words"),
    [
        (0, 1, None, 503, "cold_start", "1 replica(s) starting, retry after 7s"),
        (0, 0, None, 503, "cold_start", "a replica is being started"),
        (0, 1, 0.5, 504, "queue_timeout", "within 0.5s"),  # the deadline, not the hold, ran out
        (1, 0, None, 504, "queue_timeout", "within 120s"),  # a replica came up but stayed busy
    ],
)
def test_give_up_chooses_503_or_504(
    routable: int, starting: int, deadline: float | None, status: int, code: str, words: str
) -> None:
    config = cfg(cold_start_hold_s=120, cold_start_retry_after_s=7)
    _, state = offer(
        config, OfferSnapshot(0.0, "a", 0, deadline_s=deadline, routable=0), QueueState()
    )
    d, after = give_up(config, GiveUpSnapshot(200.0, "a", routable, starting), state)
    assert (d.admitted, d.status, d.reason_code) == (False, status, code)
    assert words in d.reason and len(after) == 0
    assert d.retry_after_s == (7 if status == 503 else None)
