"""Prefix-cache routing: send a request where its prompt's prefix is already in the KV cache.

Owns ``PrefixIndex`` (per replica, an LRU set of chained block hashes; the longest run of a
request's ``prefix_hashes`` found in a replica's set is its cache hit), ``text_block_hashes``
(the approximate hashing of text prompts), the ``prefix_cache`` scorer (the share of the
prompt's blocks a replica holds) and the load-imbalance guard the ``prefix_affinity`` picker
(``policy.routing.affinity``) applies.

The index is the one piece of routing state that is not a frozen record: it is large, so it
stays an object that the *driver* owns and feeds, approximately from the requests it routed
(``record_routed``, after applying a decision) or precisely from the replicas' KV-event feeds
(``apply_events``). ``decide`` never reads or mutates it: the driver looks the request's hits
up (``prefix_hits``) and passes them in the ``RouteSnapshot``. Pure: no clock, no IO.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from shipit.config.gateway import PrefixCacheConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import RouteContext

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
    """Which block hashes each replica (probably) holds, as a mirror of its KV cache.

    Each replica's set is an LRU of at most its capacity: the KV blocks the replica reported
    (``set_capacity``, from ``vllm:cache_config_info``), else ``max_blocks_per_replica``.
    ``record`` ages a request's blocks as the replica's cache does once the request ends: the
    replica frees a sequence's blocks tail first (a block without a hash, the partial last
    one, goes to the front of its free list: free space at once), so it evicts an old prompt's
    tail before its head. ``record`` therefore counts ``extra_blocks`` (the request's full
    blocks past its hashed prompt: its output) as the oldest of the request's space, then
    touches the prompt's blocks from the last to the first, the first the newest. The index
    so forgets a prefix's blocks in the order the replica evicts them, and a stale holder ages
    out instead of attracting requests it can no longer serve from cache, while a replica
    that still holds an old prompt's head is still found. KV events (``apply_events``),
    where a replica publishes them, correct it exactly."""

    def __init__(self, *, max_blocks_per_replica: int) -> None:
        self._max = max_blocks_per_replica
        self._capacity: dict[str, int] = {}
        self._blocks: dict[str, OrderedDict[int, None]] = {}
        self._filler = 0  # keys of the unhashed blocks ``extra_blocks`` stand for

    def set_capacity(self, replica_id: str, blocks: int) -> None:
        """The replica's KV capacity in blocks (what it reported); the index shrinks to it."""
        if blocks < 1:
            raise ValueError(f"a replica's KV capacity must be >= 1 block, got {blocks}")
        self._capacity[replica_id] = blocks
        self._trim(replica_id)

    def capacity(self, replica_id: str) -> int:
        return self._capacity.get(replica_id, self._max)

    def record(self, replica_id: str, hashes: Sequence[int], *, extra_blocks: int = 0) -> None:
        blocks = self._blocks.setdefault(replica_id, OrderedDict())
        for _ in range(min(extra_blocks, self.capacity(replica_id))):
            self._filler -= 1  # negative: never a real hash (those are unsigned)
            blocks[self._filler] = None
        for h in reversed(hashes):  # the head last: the newest, evicted last
            blocks[h] = None
            blocks.move_to_end(h)
        self._trim(replica_id)

    def _trim(self, replica_id: str) -> None:
        blocks = self._blocks.get(replica_id)
        if blocks is None:
            return
        cap = self.capacity(replica_id)
        while len(blocks) > cap:
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


def prefix_hits(
    index: PrefixIndex, hashes: Sequence[int], replica_ids: Iterable[str]
) -> tuple[tuple[str, int], ...]:
    """For a snapshot: how many leading blocks of ``hashes`` each replica holds (misses left
    out)."""
    if not hashes:
        return ()
    out = []
    for rid in replica_ids:
        n = index.match_blocks(rid, hashes)
        if n:
            out.append((rid, n))
    return tuple(out)


def record_routed(
    index: PrefixIndex, config: PrefixCacheConfig, request: RequestView, replica_id: str
) -> None:
    """Approximate mode: what was sent where is what that replica now (probably) caches.
    The driver calls it after applying a decision; precise mode ignores it."""
    if config.source == "approximate":
        index.record(replica_id, request.prefix_hashes, extra_blocks=tail_blocks(config, request))


def tail_blocks(config: PrefixCacheConfig, request: RequestView) -> int:
    """Full KV blocks a request leaves cached beyond its hashed prompt blocks: those of its
    prompt's tail and its output (``max_tokens``, when given), which push older blocks out as
    well. A partial last block takes no room once the request ends (the replica frees it to
    the front of its free list)."""
    block = config.block_size_tokens
    hashed = len(request.prefix_hashes)
    prompt = max(request.prompt_tokens_estimate, hashed * block)
    return max((prompt + (request.max_tokens or 0)) // block - hashed, 0)


def apply_events(
    index: PrefixIndex, replica_id: str, *, stored: Iterable[int], evicted: Iterable[int]
) -> None:
    """Precise mode: what a replica's KV-event feed reported."""
    index.evict(replica_id, evicted)
    index.record(replica_id, tuple(stored))


def prefix_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """Scorer ``prefix_cache``: the share of the prompt's blocks cached on each replica (0 below
    ``min_hit_blocks``)."""
    total = len(ctx.request.prefix_hashes)
    least = ctx.config.prefix_cache.min_hit_blocks
    if not total:
        return tuple(0.0 for _ in candidates)
    return tuple(
        ctx.hit(r.replica_id) / total if ctx.hit(r.replica_id) >= least else 0.0 for r in candidates
    )


def imbalance(
    config: PrefixCacheConfig, best: ReplicaRecord, ready: Sequence[ReplicaRecord]
) -> str | None:
    """Why sending one more to ``best`` would unbalance the fleet, or None."""
    total = sum(r.in_flight for r in ready) + 1
    mean = total / len(ready)
    after = best.in_flight + 1
    lightest = min(r.in_flight for r in ready)
    if after > config.imbalance_ratio * mean and after - lightest > config.imbalance_abs_requests:
        return (
            f"it would carry {after} in flight vs a mean of {mean:.1f} "
            f"(ratio > {config.imbalance_ratio}) and the lightest has {lightest}"
        )
    return None
