"""Admission queue: priority then FIFO, deadlines, shedding the worst when full."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shipit.policy.queueing import AdmissionQueue


def test_priority_then_fifo() -> None:
    q = AdmissionQueue(max_queue=10)
    for rid, prio in [("a", 1), ("b", 0), ("c", 1), ("d", 0)]:
        assert q.offer(rid, priority=prio, now_s=0.0).admitted
    order = [e.request_id for e in iter(q.pop_next, None)]
    assert order == ["b", "d", "a", "c"]


def test_full_queue_refuses_equal_priority_and_sheds_for_better() -> None:
    q = AdmissionQueue(max_queue=2, retry_after_s=3)
    q.offer("a", priority=1, now_s=0.0)
    q.offer("b", priority=1, now_s=0.0)
    refused = q.offer("c", priority=1, now_s=0.0)
    assert (refused.admitted, refused.reason_code, refused.retry_after_s) == (
        False,
        "queue_full",
        3,
    )
    shed = q.offer("vip", priority=0, now_s=0.0)
    assert shed.admitted and shed.reason_code == "shed_lower_priority"
    assert shed.shed is not None and shed.shed.request_id == "b"  # the latest of the worst class
    assert [e.request_id for e in iter(q.pop_next, None)] == ["vip", "a"]


def test_zero_queue_refuses_everything() -> None:
    assert not AdmissionQueue(max_queue=0).offer("a", priority=0, now_s=0.0).admitted


def test_deadlines_expire_and_past_deadlines_are_refused() -> None:
    q = AdmissionQueue(max_queue=5)
    assert q.offer("late", priority=0, now_s=5.0, deadline_s=5.0).reason_code == "deadline_passed"
    q.offer("a", priority=0, now_s=0.0, deadline_s=2.0)
    q.offer("b", priority=0, now_s=0.0, deadline_s=9.0)
    q.offer("c", priority=0, now_s=0.0)
    assert q.next_deadline_s() == 2.0
    assert [e.request_id for e in q.expire(3.0)] == ["a"]
    assert len(q) == 2 and q.position("b") == 0


def test_remove() -> None:
    q = AdmissionQueue(max_queue=5)
    q.offer("a", priority=0, now_s=0.0)
    assert q.remove("a") and not q.remove("a") and len(q) == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40), st.integers(0, 8))
def test_queue_never_exceeds_bound_and_pops_in_order(
    ops: list[tuple[int, bool]], bound: int
) -> None:
    q = AdmissionQueue(max_queue=bound)
    for i, (prio, pop) in enumerate(ops):
        q.offer(str(i), priority=prio, now_s=0.0)
        assert len(q) <= bound
        if pop:
            q.pop_next()
    popped = list(iter(q.pop_next, None))
    assert popped == sorted(popped)
