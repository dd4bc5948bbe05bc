"""Admission and dispatch at the gateway: pure decisions over a frozen queue.

Owns the queue record (``QueueState``: entries best first, by priority then arrival; lower
``priority`` values run first, as in vLLM) and every decision about a request that has no
replica slot yet:

- ``offer``: admit it to the queue, shed the worst waiting entry for it (HTTP 429 for that
  one), or refuse it (``queue_full`` 429, ``deadline_passed`` 504, ``no_replicas`` 503 when
  no replica exists and nothing can start one, so holding it cannot help); and how long it may wait:
  up to ``queue_timeout_s``, or, while no replica is routable (a cold start), held up to
  ``cold_start_hold_s``, never past its deadline;
- ``dispatch``: expire waiters whose deadline passed, then name the next waiter to route,
  priority then FIFO, passing over one that cannot be placed now (only replicas it must
  avoid are free) so it does not hold back those behind it;
- ``exclusion``: on a retry, the replicas to avoid (those that failed this request), unless
  nothing else is routable;
- ``give_up``: a wait ran out: 503 ``cold_start`` when the cold-start hold ran out and still
  no replica is routable, else 504 ``queue_timeout``.

Each is ``decide(config, snapshot, state) -> (decision, state)`` with a ``reason_code`` and a
``reason``; ``now_s`` comes in the snapshot. It never reads a clock and never waits: the router
service does the waiting and applies the decisions.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from shipit.config.gateway import QueueingConfig
from shipit.core.fleet import ReplicaRecord


@dataclass(frozen=True, slots=True, order=True)
class QueueEntry:
    """One waiting request; ordered by (priority, seq): best first."""

    priority: int
    seq: int
    request_id: str = field(compare=False)
    enqueued_s: float = field(compare=False)
    deadline_s: float | None = field(compare=False, default=None)
    exclude: frozenset[str] = field(compare=False, default=frozenset())  # replicas that failed it
    wait_s: float = field(compare=False, default=0.0)  # the longest it waits
    # True when the hold (queue timeout or cold-start hold), not the deadline, bounds the wait.
    bounded_by_hold: bool = field(compare=False, default=True)


@dataclass(frozen=True, slots=True)
class QueueState:
    entries: tuple[QueueEntry, ...] = ()  # best first
    seq: int = 0  # arrivals numbered so far (FIFO within a priority)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, request_id: str) -> QueueEntry | None:
        return next((e for e in self.entries if e.request_id == request_id), None)

    def position(self, request_id: str) -> int | None:
        """0-based place in the queue, or None when it is not waiting."""
        return next((i for i, e in enumerate(self.entries) if e.request_id == request_id), None)

    def without(self, *request_ids: str) -> QueueState:
        """The queue with those entries taken out (granted, gone, refused)."""
        gone = set(request_ids)
        kept = tuple(e for e in self.entries if e.request_id not in gone)
        return self if len(kept) == len(self.entries) else QueueState(kept, self.seq)

    def next_deadline_s(self) -> float | None:
        deadlines = [e.deadline_s for e in self.entries if e.deadline_s is not None]
        return min(deadlines) if deadlines else None


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """What happens to a request that could not take a slot at once."""

    admitted: bool
    reason_code: str  # queued, shed_lower_priority | queue_full, deadline_passed,
    #                   cold_start, queue_timeout
    reason: str
    status: int | None = None  # the HTTP status of a refusal: 429, 503 or 504
    retry_after_s: int | None = None
    shed: QueueEntry | None = None  # a waiting entry that lost its place to this one (429)
    wait_s: float = 0.0  # admitted: the longest it waits before ``give_up``
    cold_hold: bool = False  # admitted while no replica is routable: held for a cold start


# ----- offer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferSnapshot:
    now_s: float
    request_id: str
    priority: int
    deadline_s: float | None = None
    exclude: frozenset[str] = frozenset()
    routable: int = 1  # replicas that could take a request now; 0 is a cold start
    # A replica may still become routable: one is registered, or something can start one.
    startable: bool = True


def _wait(config: QueueingConfig, snapshot: OfferSnapshot) -> tuple[float, bool, str]:
    """How long the request may wait, whether the hold (not its deadline) bounds that, and why."""
    cold = snapshot.routable == 0
    hold_s = config.cold_start_hold_s if cold else config.queue_timeout_s
    what = "cold_start_hold_s: no replica is ready" if cold else "queue_timeout_s"
    wait_s = hold_s
    if snapshot.deadline_s is not None:
        wait_s = min(hold_s, max(snapshot.deadline_s - snapshot.now_s, 0.0))
    if wait_s == hold_s:
        return wait_s, True, f"waits up to {wait_s:g}s ({what})"
    return wait_s, False, f"waits up to {wait_s:g}s (its deadline)"


def offer(
    config: QueueingConfig, snapshot: OfferSnapshot, state: QueueState
) -> tuple[AdmissionDecision, QueueState]:
    """Admit, shed for, or refuse a request that found no free slot (or others waiting)."""
    now, deadline = snapshot.now_s, snapshot.deadline_s
    if deadline is not None and deadline <= now:
        why = "the deadline passed on arrival"
        return AdmissionDecision(False, "deadline_passed", why, status=504), state
    if snapshot.routable == 0 and not snapshot.startable:
        why = (
            "this deployment has no replicas and nothing can start one; give it replicas, "
            "replica_urls or an autoscaling block (shipit up --replicas N, --replica-url URL "
            "or --max-replicas N)"
        )
        return AdmissionDecision(False, "no_replicas", why, status=503), state
    seq = state.seq + 1
    wait_s, by_hold, how_long = _wait(config, snapshot)
    entry = QueueEntry(
        snapshot.priority,
        seq,
        snapshot.request_id,
        now,
        deadline,
        snapshot.exclude,
        wait_s,
        by_hold,
    )
    entries = list(state.entries)
    shed: QueueEntry | None = None
    if len(entries) >= config.max_queue:
        worst = entries[-1] if entries else None
        if worst is None or not entry < worst:
            why = (
                f"{len(entries)} requests already wait (max_queue {config.max_queue}) "
                f"at priority {snapshot.priority} or better"
            )
            refused = AdmissionDecision(
                False, "queue_full", why, status=429, retry_after_s=config.retry_after_s
            )
            return refused, QueueState(state.entries, seq)
        shed = entries.pop()
    bisect.insort(entries, entry)
    after = QueueState(tuple(entries), seq)
    cold = snapshot.routable == 0
    if shed is not None:
        code = "shed_lower_priority"
        why = f"queue full: took the place of {shed.request_id} (priority {shed.priority})"
    else:
        code, why = "queued", f"position {after.position(snapshot.request_id)}"
    decision = AdmissionDecision(
        True, code, f"{why}; {how_long}", shed=shed, wait_s=wait_s, cold_hold=cold
    )
    return decision, after


# ----- failover exclusion ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExclusionSnapshot:
    now_s: float
    exclude: frozenset[str]  # replicas that already failed this request
    replicas: tuple[ReplicaRecord, ...]


@dataclass(frozen=True, slots=True)
class ExclusionDecision:
    avoid: frozenset[str]  # replicas to leave out of this attempt's routing
    reason_code: str  # "none", "avoid_failed", "only_failed_left"
    reason: str


def exclusion(snapshot: ExclusionSnapshot) -> ExclusionDecision:
    """A retry avoids the replicas that already failed it, unless nothing else is routable
    (no config, no state: the same inputs give the same answer)."""
    exclude, now_s = snapshot.exclude, snapshot.now_s
    replicas = snapshot.replicas
    if not exclude:
        return ExclusionDecision(frozenset(), "none", "first attempt")
    if any(r.routable(now_s) for r in replicas if r.replica_id not in exclude):
        why = f"avoiding {', '.join(sorted(exclude))}: failed this request"
        return ExclusionDecision(exclude, "avoid_failed", why)
    why = f"only {', '.join(sorted(exclude))} (which failed it) can take it; trying again there"
    return ExclusionDecision(frozenset(), "only_failed_left", why)


# ----- dispatch ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DispatchSnapshot:
    now_s: float
    replicas: tuple[ReplicaRecord, ...]
    tried: frozenset[str] = frozenset()  # waiters routing could not place in this pass
    # The best (lowest) priority among waiters that chose, in this pass, to wait for their
    # cache holder: a waiter of a worse class may not take the slot they let go.
    held_priority: int | None = None


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    reason_code: str  # "next_waiter", "no_free_slot", "none_placeable", "empty"
    reason: str
    entry: QueueEntry | None = None  # the waiter to route now (still queued until granted)
    avoid: frozenset[str] = frozenset()  # the replicas it must avoid (``exclusion``)
    expired: tuple[QueueEntry, ...] = ()  # taken out: their deadline passed (504)
    passed_over: tuple[str, ...] = ()  # waiters only replicas they must avoid could take


def dispatch(
    config: QueueingConfig, snapshot: DispatchSnapshot, state: QueueState
) -> tuple[DispatchDecision, QueueState]:
    """Expire deadlines, then the next waiter that a free slot can take, best first."""
    now = snapshot.now_s
    expired = tuple(e for e in state.entries if e.deadline_s is not None and e.deadline_s <= now)
    state = state.without(*(e.request_id for e in expired))
    if not state.entries:
        return DispatchDecision("empty", "nobody waits", expired=expired), state
    free = [r for r in snapshot.replicas if r.routable(now) and r.free_slots]
    if not free:
        why = f"{len(state)} wait; no routable replica has a free slot"
        return DispatchDecision("no_free_slot", why, expired=expired), state
    passed: list[str] = []
    held = snapshot.held_priority
    behind = 0
    for entry in state.entries:
        if entry.request_id in snapshot.tried:
            continue
        if held is not None and entry.priority > held:
            behind += 1  # overtaking happens only within a priority class
            continue
        avoid = exclusion(ExclusionSnapshot(now, entry.exclude, snapshot.replicas)).avoid
        if any(r.replica_id not in avoid for r in free):
            why = f"{entry.request_id} is first in line (priority {entry.priority}) with a slot"
            if passed:
                why += f", past {len(passed)} that only failed replicas could take"
            decision = DispatchDecision(
                "next_waiter", why, entry, avoid, expired=expired, passed_over=tuple(passed)
            )
            return decision, state
        passed.append(entry.request_id)
    why = f"{len(free)} free replica(s), but no waiter can be placed there now"
    if behind:
        why += f" ({behind} of a lower priority wait behind one held for its cache holder)"
    return DispatchDecision(
        "none_placeable", why, expired=expired, passed_over=tuple(passed)
    ), state


# ----- give up ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GiveUpSnapshot:
    now_s: float
    request_id: str
    routable: int  # replicas that could take a request now
    starting: int  # replicas still starting


def give_up(
    config: QueueingConfig, snapshot: GiveUpSnapshot, state: QueueState
) -> tuple[AdmissionDecision, QueueState]:
    """A waiter's wait ran out: 503 when its cold-start hold ran out with still no replica
    routable (with when to come back), else 504. It leaves the queue either way."""
    entry = state.get(snapshot.request_id)
    state = state.without(snapshot.request_id)
    wait_s = entry.wait_s if entry is not None else config.queue_timeout_s
    by_hold = entry.bounded_by_hold if entry is not None else True
    if snapshot.routable == 0 and by_hold:
        retry = config.cold_start_retry_after_s
        if snapshot.starting:
            why = (
                f"no replica became ready within {wait_s:g}s; {snapshot.starting} replica(s) "
                f"starting, retry after {retry}s"
            )
        else:
            why = (
                f"no replica ready within {wait_s:g}s and none starting yet; a replica is "
                f"being started, retry after {retry}s"
            )
        return AdmissionDecision(False, "cold_start", why, status=503, retry_after_s=retry), state
    why = f"no replica slot within {wait_s:g}s"
    return AdmissionDecision(False, "queue_timeout", why, status=504), state
