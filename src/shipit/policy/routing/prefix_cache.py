"""``prefix_cache``: send a request where its prompt's prefix is already in the KV cache,
unless that replica is overloaded (the load-imbalance guard).

Owns ``PrefixIndex`` (per replica, an LRU set of chained block hashes; the longest run of a
request's ``prefix_hashes`` found in a replica's set is its cache hit) and ``text_block_hashes``
(the approximate hashing of text prompts). The index is fed either approximately, from the
requests this policy routed (``observe``), or precisely, from the replicas' KV-event feeds
(``apply_events``, fed by the router service). Pure: no clock, no IO.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from shipit.config.gateway import PrefixCacheConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import (
    RouteDecision,
    candidates_for,
    lower_load,
    no_candidate,
    pick,
    routable,
)

_TEXT_SCHEME = b"shipit-text-v1"


def text_block_hashes(text: str, *, block_chars: int, salt: str = "") -> tuple[int, ...]:
    """Chained hashes of every full ``block_chars`` chunk of ``text``: an approximation of
    token blocks for a gateway that does not tokenize (each hash covers all text before it)."""
    if block_chars < 1:
        raise ValueError(f"block_chars must be >= 1, got {block_chars}")
    data = text.encode("utf-8")
    parent = hashlib.blake2b(_TEXT_SCHEME + salt.encode(), digest_size=8).digest()
    hashes: list[int] = []
    for start in range(0, len(data) - block_chars + 1, block_chars):
        parent = hashlib.blake2b(parent + data[start : start + block_chars], digest_size=8).digest()
        hashes.append(int.from_bytes(parent, "big"))
    return tuple(hashes)


class PrefixIndex:
    """Which block hashes each replica (probably) holds; least recently used dropped first."""

    def __init__(self, *, max_blocks_per_replica: int) -> None:
        self._max = max_blocks_per_replica
        self._blocks: dict[str, OrderedDict[int, None]] = {}

    def record(self, replica_id: str, hashes: Iterable[int]) -> None:
        blocks = self._blocks.setdefault(replica_id, OrderedDict())
        for h in hashes:
            blocks[h] = None
            blocks.move_to_end(h)
        while len(blocks) > self._max:
            blocks.popitem(last=False)

    def evict(self, replica_id: str, hashes: Iterable[int]) -> None:
        blocks = self._blocks.get(replica_id)
        if blocks is not None:
            for h in hashes:
                blocks.pop(h, None)

    def forget(self, replica_id: str) -> None:
        """Drop everything known of a replica (it restarted, or its feed had a gap)."""
        self._blocks.pop(replica_id, None)

    def match_blocks(self, replica_id: str, hashes: Sequence[int]) -> int:
        """How many leading blocks of ``hashes`` the replica holds."""
        blocks = self._blocks.get(replica_id)
        if not blocks:
            return 0
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def size(self, replica_id: str) -> int:
        return len(self._blocks.get(replica_id, ()))


class PrefixCache:
    name = "prefix_cache"

    def __init__(self, config: PrefixCacheConfig) -> None:
        self.config = config
        self.index = PrefixIndex(max_blocks_per_replica=config.max_blocks_per_replica)
        self._turn = 0

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = candidates_for(replicas, now_s)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        hits = {
            r.replica_id: self.index.match_blocks(r.replica_id, request.prefix_hashes)
            for r in candidates
        }
        best_hit = max(hits.values())
        least = pick(candidates, [(1.0, lower_load)], tiebreak_offset=self._turn)
        if best_hit < self.config.min_hit_blocks:
            return RouteDecision(
                least.replica_id,
                self.name,
                "no_prefix_match",
                f"no cached prefix of {len(request.prefix_hashes)} blocks; least loaded",
            )
        holders = [r for r in candidates if hits[r.replica_id] == best_hit]
        best = pick(holders, [(1.0, lower_load)], tiebreak_offset=self._turn)
        overloaded = self._imbalanced(best, replicas, now_s)
        if overloaded and least.replica_id != best.replica_id:
            return RouteDecision(
                least.replica_id,
                self.name,
                "imbalance_guard",
                f"{best.replica_id} holds {best_hit} blocks but {overloaded}; least loaded instead",
                prefix_hit_blocks=hits[least.replica_id],
            )
        return RouteDecision(
            best.replica_id,
            self.name,
            "prefix_hit",
            f"{best_hit}/{len(request.prefix_hashes)} prompt blocks cached there",
            prefix_hit_blocks=best_hit,
        )

    def _imbalanced(
        self, best: ReplicaRecord, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> str | None:
        """Why sending one more to ``best`` would unbalance the fleet, or None."""
        ready = routable(replicas, now_s)
        total = sum(r.in_flight for r in ready) + 1
        mean = total / len(ready)
        after = best.in_flight + 1
        lightest = min(r.in_flight for r in ready)
        cfg = self.config
        if after > cfg.imbalance_ratio * mean and after - lightest > cfg.imbalance_abs_requests:
            return (
                f"it would carry {after} in flight vs a mean of {mean:.1f} "
                f"(ratio > {cfg.imbalance_ratio}) and the lightest has {lightest}"
            )
        return None

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        self._turn += 1
        if decision.replica_id is not None and self.config.source == "approximate":
            self.index.record(decision.replica_id, request.prefix_hashes)

    def apply_events(
        self, replica_id: str, *, stored: Iterable[int], evicted: Iterable[int]
    ) -> None:
        """Precise mode: what a replica's KV-event feed reported."""
        self.index.evict(replica_id, evicted)
        self.index.record(replica_id, stored)
