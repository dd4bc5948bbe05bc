"""The KV-cache event feed: which block hashes this replica stored and evicted, in order.

Owns a bounded, ordered buffer of the engine's ``KVEvent``s and the page a consumer reads
after a sequence number (``events_after``). Sequence numbers start at 0 and increase by one
per event for the life of the process, so a consumer resumes with ``after=<last seen>``; if
the events it needs were already dropped from the buffer the page says ``truncated`` and the
consumer must forget what it knew of this replica and rebuild from the feed (the prefix cache
may still hold blocks stored before the gap; they reappear as they are stored again).
The hashing scheme is the engine's (``engine.block_manager.hash_prompt_blocks``).
It must not reach into the engine: the app moves drained events in with ``extend``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shipit.engine.block_manager import HASH_SCHEME, KVEvent


@dataclass(frozen=True, slots=True)
class KVEventPage:
    events: tuple[KVEvent, ...]
    next_after: int  # pass as ``after`` next time
    truncated: bool  # events after ``after`` were dropped before this read

    def to_json(self, *, block_size: int, instance_id: str) -> dict[str, Any]:
        return {
            "instance_id": instance_id,
            "hash_scheme": HASH_SCHEME.decode(),
            "block_size": block_size,
            "truncated": self.truncated,
            "next_after": self.next_after,
            "events": [
                {
                    "seq_no": e.seq_no,
                    "kind": e.kind,
                    "block_hash": e.block_hash,
                    "parent_hash": e.parent_hash,
                    "salt_key": e.salt_key,
                }
                for e in self.events
            ],
        }


class KVEventBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._events: deque[KVEvent] = deque(maxlen=capacity)
        self._last_seq_no = -1

    @property
    def last_seq_no(self) -> int:
        """The newest event's number; -1 before the first."""
        return self._last_seq_no

    def extend(self, events: Iterable[KVEvent]) -> None:
        for event in events:
            self._events.append(event)
            self._last_seq_no = event.seq_no

    def events_after(self, after: int, *, limit: int) -> KVEventPage:
        """Up to ``limit`` events with ``seq_no > after``, oldest first."""
        if after > self._last_seq_no:
            # A consumer ahead of us: this is a new process (numbers restarted). Start over.
            return KVEventPage((), self._last_seq_no, True)
        if not self._events:
            return KVEventPage((), after, False)
        first = self._events[0].seq_no
        truncated = after + 1 < first
        start = max(after + 1 - first, 0)
        stop = min(start + limit, len(self._events))
        page = tuple(self._events[i] for i in range(start, stop))
        next_after = page[-1].seq_no if page else after
        return KVEventPage(page, next_after, truncated)
