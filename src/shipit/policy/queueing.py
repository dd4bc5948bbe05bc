"""Admission at the gateway: a bounded queue ordered by priority, then arrival (FIFO).

Owns ``AdmissionQueue`` (pure bookkeeping: ``offer`` admits, sheds or refuses; ``entries``
lists the waiting ones best first and ``pop_next`` hands out the head; ``expire`` removes entries
whose deadline passed) and its decisions as frozen records with a reason. Lower ``priority``
values run first, as in vLLM. When the queue is full, a newcomer that outranks the worst waiting
entry takes its place and the worst is shed (HTTP 429); otherwise the newcomer is refused. It
never reads a clock (``now_s`` comes in) and never waits: the router service does the waiting.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class QueueEntry:
    priority: int
    seq: int
    request_id: str = field(compare=False)
    enqueued_s: float = field(compare=False)
    deadline_s: float | None = field(compare=False, default=None)


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    admitted: bool
    reason_code: str  # "queued", "queue_full", "deadline_passed", "shed_lower_priority"
    reason: str
    shed: QueueEntry | None = None  # a waiting entry that lost its place to this one
    retry_after_s: int | None = None


class AdmissionQueue:
    def __init__(self, *, max_queue: int, retry_after_s: int = 1) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._entries: list[QueueEntry] = []  # sorted: best first
        self._ids: set[str] = set()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def offer(
        self, request_id: str, *, priority: int, now_s: float, deadline_s: float | None = None
    ) -> AdmissionDecision:
        if deadline_s is not None and deadline_s <= now_s:
            return AdmissionDecision(False, "deadline_passed", "the deadline passed on arrival")
        self._seq += 1
        entry = QueueEntry(priority, self._seq, request_id, now_s, deadline_s)
        shed: QueueEntry | None = None
        if len(self._entries) >= self.max_queue:
            worst = self._entries[-1] if self._entries else None
            if worst is None or not entry < worst:
                return AdmissionDecision(
                    False,
                    "queue_full",
                    f"{len(self._entries)} requests already wait (max_queue {self.max_queue}) "
                    f"at priority {priority} or better",
                    retry_after_s=self.retry_after_s,
                )
            shed = self._entries.pop()
            self._ids.discard(shed.request_id)
        bisect.insort(self._entries, entry)
        self._ids.add(request_id)
        if shed is not None:
            return AdmissionDecision(
                True,
                "shed_lower_priority",
                f"queue full: took the place of {shed.request_id} (priority {shed.priority})",
                shed=shed,
            )
        return AdmissionDecision(True, "queued", f"position {self.position(request_id)}")

    def position(self, request_id: str) -> int:
        """0-based place in the queue, or -1 when it is not waiting."""
        for i, e in enumerate(self._entries):
            if e.request_id == request_id:
                return i
        return -1

    def entries(self) -> tuple[QueueEntry, ...]:
        """The waiting entries, best first (a snapshot)."""
        return tuple(self._entries)

    def peek(self) -> QueueEntry | None:
        return self._entries[0] if self._entries else None

    def pop_next(self) -> QueueEntry | None:
        if not self._entries:
            return None
        entry = self._entries.pop(0)
        self._ids.discard(entry.request_id)
        return entry

    def remove(self, request_id: str) -> bool:
        """Take a waiting entry out (its client went away); False when it was not waiting."""
        if request_id not in self._ids:
            return False
        self._ids.discard(request_id)
        self._entries = [e for e in self._entries if e.request_id != request_id]
        return True

    def expire(self, now_s: float) -> list[QueueEntry]:
        """Remove and return every entry whose deadline has passed."""
        expired = [e for e in self._entries if e.deadline_s is not None and e.deadline_s <= now_s]
        if expired:
            gone = {e.request_id for e in expired}
            self._entries = [e for e in self._entries if e.request_id not in gone]
            self._ids -= gone
        return expired

    def next_deadline_s(self) -> float | None:
        deadlines = [e.deadline_s for e in self._entries if e.deadline_s is not None]
        return min(deadlines) if deadlines else None
