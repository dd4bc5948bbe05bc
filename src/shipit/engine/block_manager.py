"""Paged KV-cache bookkeeping: fixed-size blocks, block tables, reference counts, prefix cache.

The block manager decides which physical KV block holds which tokens of which sequence; it
never touches the KV tensors themselves (the executor does) and never reads a clock.

Prefix caching works on *full* blocks identified by a chained hash (see ``hash_block``):
the hash of block ``i`` covers every token of blocks ``0..i`` plus the LoRA adapter name and
an optional cache salt, so two sequences share a block only when everything before it,
the adapter and the tenant match. A block whose reference count drops to zero keeps its
contents and its hash and goes to the free list; it can be claimed again by a prefix hit
until it is evicted (least recently freed first) to make room for new tokens.

Every stored and evicted hash is appended, in order, to ``events`` so a replica can publish
a KV-event feed from which a router rebuilds the same index; each event names its chain's
salt by ``salt_key`` (a hash, never the salt), so the index can be kept per tenant.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass

from shipit.core.errors import CapacityError
from shipit.engine.sequence import Sequence

# Bump when the hashing scheme changes: it is part of every root hash, so old and new
# hashes never collide in a router's index.
HASH_SCHEME = b"shipit-kv-v1"


def root_hash(lora_name: str | None, cache_salt: str | None) -> int:
    """The hash a chain starts from: distinct per (adapter, salt)."""
    data = b"\x00".join(
        (HASH_SCHEME, (lora_name or "").encode("utf-8"), (cache_salt or "").encode("utf-8"))
    )
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def salt_key(cache_salt: str | None) -> str | None:
    """A short public name for a cache salt (16 hex digits), as KV events carry it: a router
    can key its prefix index by tenant without ever seeing the salt itself."""
    if not cache_salt:
        return None
    data = b"\x00".join((HASH_SCHEME, b"salt", cache_salt.encode("utf-8")))
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def hash_block(parent_hash: int, token_ids: list[int]) -> int:
    """Hash of one full block: blake2b-64 over the parent hash (8 bytes, big-endian)
    followed by the block's token ids as 4-byte little-endian unsigned integers."""
    h = hashlib.blake2b(parent_hash.to_bytes(8, "big"), digest_size=8)
    try:  # one pack, not a bytes object per token: half the time (routers hash every prompt)
        h.update(struct.pack(f"<{len(token_ids)}I", *token_ids))
    except struct.error as exc:
        raise OverflowError(f"token ids must be in [0, 2**32): {exc}") from None
    return int.from_bytes(h.digest(), "big")


def hash_prompt_blocks(
    token_ids: list[int],
    block_size: int,
    *,
    lora_name: str | None = None,
    cache_salt: str | None = None,
) -> list[int]:
    """Chained hashes of every full block of ``token_ids``: what a router computes."""
    hashes: list[int] = []
    parent = root_hash(lora_name, cache_salt)
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


@dataclass(frozen=True, slots=True)
class KVEvent:
    """One change to the prefix cache, numbered so a consumer can resume."""

    seq_no: int
    kind: str  # "stored" or "evicted"
    block_hash: int
    parent_hash: int | None = None
    salt_key: str | None = None  # ``salt_key(cache_salt)`` of the block's chain


@dataclass(frozen=True, slots=True)
class BlockUsage:
    num_blocks: int
    num_used_blocks: int  # referenced by a live sequence
    num_cached_free_blocks: int  # free, but still holding a reusable prefix
    block_size: int

    @property
    def usage_perc(self) -> float:
        """Fraction of blocks in use, as vLLM's ``kv_cache_usage_perc`` (0..1)."""
        return self.num_used_blocks / self.num_blocks if self.num_blocks else 0.0


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_counts = [0] * num_blocks
        self._block_hash: list[int | None] = [None] * num_blocks
        self._block_salt: list[str | None] = [None] * num_blocks
        self._hash_to_block: dict[int, int] = {}
        # Free blocks in eviction order: the first is taken first. Blocks without a cached
        # prefix sit at the front so cached prefixes are evicted last.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.events: list[KVEvent] = []
        self._next_event = 0
        # Counted in tokens, as vLLM's prefix_cache_queries/hits.
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    # ----- figures -------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def usage(self) -> BlockUsage:
        cached_free = sum(1 for b in self._free if self._block_hash[b] is not None)
        return BlockUsage(
            num_blocks=self.num_blocks,
            num_used_blocks=self.num_blocks - len(self._free),
            num_cached_free_blocks=cached_free,
            block_size=self.block_size,
        )

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ----- prefix cache ----------------------------------------------------------------
    def _update_hashes(self, seq: Sequence, num_tokens: int) -> None:
        """Extend ``seq.block_hashes`` to cover the full blocks of its first ``num_tokens``."""
        bs = self.block_size
        n_full = num_tokens // bs
        if len(seq.block_hashes) >= n_full:
            return
        parent = (
            seq.block_hashes[-1] if seq.block_hashes else root_hash(seq.lora_name, seq.cache_salt)
        )
        for i in range(len(seq.block_hashes), n_full):
            parent = hash_block(parent, seq.token_slice(i * bs, (i + 1) * bs))
            seq.block_hashes.append(parent)

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding the longest prefix of ``seq`` (not yet claimed).

        At least one token is always left to compute: the engine needs the logits of the
        last prompt position, so a fully cached prompt recomputes its last block.
        """
        if not self.enable_prefix_caching:
            return []
        self._update_hashes(seq, seq.num_tokens)
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hits: list[int] = []
        for block_hash in seq.block_hashes[:max_blocks]:
            block = self._hash_to_block.get(block_hash)
            if block is None:
                break
            hits.append(block)
        self.prefix_cache_queries += seq.num_tokens
        self.prefix_cache_hits += len(hits) * self.block_size
        return hits

    # ----- allocation ------------------------------------------------------------------
    def check_fits(self, num_tokens: int) -> None:
        """Refuse a sequence that could never fit, even with the whole cache to itself."""
        if self.blocks_needed(num_tokens) > self.num_blocks:
            raise CapacityError(
                f"{num_tokens} tokens need {self.blocks_needed(num_tokens)} KV blocks of "
                f"{self.block_size}, but the cache has {self.num_blocks}; raise the KV cache "
                "size or shorten the request",
                field="prompt",
            )

    def allocate(
        self, seq: Sequence, num_new_tokens: int, cached_blocks: list[int] | None = None
    ) -> bool:
        """Give ``seq`` blocks for ``num_new_tokens`` more tokens, first claiming
        ``cached_blocks`` (a prefix hit). Returns False, changing nothing, if they don't fit."""
        cached_blocks = cached_blocks or []
        num_cached_free = sum(1 for b in cached_blocks if self._ref_counts[b] == 0)
        total = seq.num_computed_tokens + len(cached_blocks) * self.block_size + num_new_tokens
        need = self.blocks_needed(total) - len(seq.block_table) - len(cached_blocks)
        if need > len(self._free) - num_cached_free:
            return False
        for block in cached_blocks:
            if self._ref_counts[block] == 0:
                del self._free[block]
            self._ref_counts[block] += 1
            seq.block_table.append(block)
        for _ in range(max(need, 0)):
            block, _unused = self._free.popitem(last=False)
            self._evict(block)
            self._ref_counts[block] = 1
            seq.block_table.append(block)
        return True

    def _evict(self, block: int) -> None:
        block_hash = self._block_hash[block]
        if block_hash is None:
            return
        self._block_hash[block] = None
        if self._hash_to_block.get(block_hash) == block:
            del self._hash_to_block[block_hash]
            self._emit("evicted", block_hash, salt=self._block_salt[block])
        self._block_salt[block] = None

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks that ``seq.num_computed_tokens`` has filled completely."""
        if not self.enable_prefix_caching:
            return
        self._update_hashes(seq, seq.num_computed_tokens)
        n_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        salt = salt_key(seq.cache_salt)
        for i in range(n_full):
            block = seq.block_table[i]
            if self._block_hash[block] is not None:
                continue
            block_hash = seq.block_hashes[i]
            if block_hash in self._hash_to_block:
                continue  # the same content already lives in another block
            self._block_hash[block] = block_hash
            self._hash_to_block[block_hash] = block
            self._block_salt[block] = salt
            self._emit("stored", block_hash, seq.block_hashes[i - 1] if i else None, salt=salt)

    def free(self, seq: Sequence) -> None:
        """Drop ``seq``'s references. Tail blocks are freed first, so they are evicted
        before the shared prefix blocks that more requests are likely to reuse."""
        for block in reversed(seq.block_table):
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                self._free[block] = None
                if self._block_hash[block] is None:
                    self._free.move_to_end(block, last=False)
        seq.block_table.clear()

    def reset_prefix_cache(self) -> int:
        """Forget every cached prefix held only by free blocks; returns how many."""
        dropped = 0
        for block in list(self._free):
            if self._block_hash[block] is not None:
                self._evict(block)
                self._free.move_to_end(block, last=False)
                dropped += 1
        return dropped

    def _emit(
        self,
        kind: str,
        block_hash: int,
        parent_hash: int | None = None,
        *,
        salt: str | None = None,
    ) -> None:
        self.events.append(KVEvent(self._next_event, kind, block_hash, parent_hash, salt))
        self._next_event += 1

    def drain_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events
