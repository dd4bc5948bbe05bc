"""Block manager: allocation, reference counts, prefix cache by chained hashes, LRU eviction."""

from __future__ import annotations

import pytest

from shipit.core.errors import CapacityError
from shipit.engine.block_manager import BlockManager, hash_prompt_blocks, salt_key
from shipit.engine.sampling import SamplingParams
from shipit.engine.sequence import Sequence

BS = 4


def seq(
    tokens: list[int], i: int = 0, *, lora: str | None = None, salt: str | None = None
) -> Sequence:
    return Sequence(f"s{i}", list(tokens), SamplingParams(), i, lora_name=lora, cache_salt=salt)


def admit(bm: BlockManager, s: Sequence) -> int:
    """Admit as the scheduler does: prefix hit, allocate the rest, mark all computed."""
    hits = bm.match_prefix(s)
    cached = len(hits) * bm.block_size
    assert bm.allocate(s, s.num_tokens - cached, hits)
    s.num_computed_tokens = s.num_tokens
    bm.cache_full_blocks(s)
    return cached


def test_allocate_and_free_keep_counts() -> None:
    bm = BlockManager(8, BS)
    s = seq(list(range(10)))
    assert admit(bm, s) == 0
    assert len(s.block_table) == 3
    assert bm.usage().num_used_blocks == 3
    assert bm.usage().usage_perc == pytest.approx(3 / 8)
    bm.free(s)
    assert bm.num_free_blocks == 8
    assert s.block_table == []
    # Two full blocks keep their prefix after the free; the partial one does not.
    assert bm.usage().num_cached_free_blocks == 2


def test_allocate_refuses_without_side_effects() -> None:
    bm = BlockManager(2, BS)
    s = seq(list(range(12)))
    assert not bm.allocate(s, 12)
    assert bm.num_free_blocks == 2 and s.block_table == []


def test_prefix_hit_shares_blocks_and_counts_tokens() -> None:
    bm = BlockManager(16, BS)
    a = seq(list(range(10)), 0)
    admit(bm, a)
    b = seq([*range(8), 99, 98, 97], 1)
    assert admit(bm, b) == 8
    assert b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] != a.block_table[2]
    assert bm.prefix_cache_queries == 10 + 11
    assert bm.prefix_cache_hits == 8
    bm.free(a)
    # The shared blocks are still referenced by b.
    assert bm.usage().num_used_blocks == 3


def test_fully_cached_prompt_still_computes_its_last_token() -> None:
    bm = BlockManager(16, BS)
    admit(bm, seq(list(range(8)), 0))
    again = seq(list(range(8)), 1)
    # 8 tokens = 2 full blocks, but the last block is recomputed to get logits.
    assert admit(bm, again) == 4


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"lora": "a"}, {"lora": "b"}),
        ({"lora": "a"}, {}),
        ({"salt": "tenant-1"}, {"salt": "tenant-2"}),
        ({"salt": "tenant-1"}, {}),
    ],
)
def test_adapter_and_salt_isolate_the_cache(first: dict[str, str], second: dict[str, str]) -> None:
    bm = BlockManager(16, BS)
    admit(bm, seq(list(range(12)), 0, **first))
    assert admit(bm, seq(list(range(12)), 1, **second)) == 0
    assert admit(bm, seq(list(range(12)), 2, **first)) == 8


def test_lru_evicts_least_recently_freed_prefix_first() -> None:
    bm = BlockManager(4, BS)
    old = seq([1] * 4 + [2] * 4 + [0], 0)  # 2 full blocks + 1 partial = 3 blocks
    admit(bm, old)
    bm.free(old)
    newer = seq([7] * 4 + [0], 1)  # 1 full block + 1 partial
    admit(bm, newer)
    bm.free(newer)
    events = bm.drain_events()
    assert [e.kind for e in events] == ["stored", "stored", "stored"]
    assert [e.seq_no for e in events] == [0, 1, 2]
    # 4 blocks: 3 hold cached prefixes; a 2-block request takes the uncached one, then
    # evicts the least recently freed cached block.
    filler = seq([5, 6, 7, 8, 9], 2)
    admit(bm, filler)
    evicted = [e for e in bm.drain_events() if e.kind == "evicted"]
    assert len(evicted) == 1
    # newer's prefix survived (freed last); old's tail block (freed first) was evicted.
    assert admit(bm, seq([7] * 4 + [3], 3)) == 4


def test_router_hashes_match_engine_hashes() -> None:
    bm = BlockManager(16, BS)
    s = seq(list(range(13)), lora="sql", salt="t")
    admit(bm, s)
    stored = [e.block_hash for e in bm.drain_events() if e.kind == "stored"]
    assert stored == hash_prompt_blocks(list(range(13)), BS, lora_name="sql", cache_salt="t")
    assert stored != hash_prompt_blocks(list(range(13)), BS)


def test_prefix_caching_off_never_hits() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=False)
    admit(bm, seq(list(range(12)), 0))
    assert admit(bm, seq(list(range(12)), 1)) == 0
    assert bm.drain_events() == []


def test_request_larger_than_the_cache_is_refused_with_sizes() -> None:
    bm = BlockManager(2, BS)
    with pytest.raises(CapacityError, match="need 3 KV blocks of 4, but the cache has 2"):
        bm.check_fits(9)


def test_reset_prefix_cache_drops_only_free_blocks() -> None:
    bm = BlockManager(8, BS)
    live = seq(list(range(8)), 0)
    admit(bm, live)
    gone = seq([9] * 8, 1)
    admit(bm, gone)
    bm.free(gone)
    assert bm.reset_prefix_cache() == 2
    assert admit(bm, seq([*list(range(8)), 1], 2)) == 8


def test_events_name_the_salt_by_key_when_stored_and_evicted() -> None:
    bm = BlockManager(8, BS)
    salted = seq(list(range(8)), 0, salt="tenant-a")
    admit(bm, salted)
    plain = seq(list(range(8)), 1)
    admit(bm, plain)
    bm.free(salted)
    bm.free(plain)
    bm.reset_prefix_cache()
    events = bm.drain_events()
    by_kind = {
        kind: {e.salt_key for e in events if e.kind == kind} for kind in ("stored", "evicted")
    }
    assert by_kind["stored"] == by_kind["evicted"] == {salt_key("tenant-a"), None}
    assert len([e for e in events if e.kind == "evicted"]) == 4


def test_the_block_hash_scheme_is_stable() -> None:
    """shipit-kv-v1 as routers and KV-event consumers compute it: blake2b-64 of the parent
    (8 bytes, big-endian) and the ids (4 bytes each, little-endian); values fixed once."""
    from shipit.engine.block_manager import hash_block, root_hash

    root = root_hash(None, None)
    assert root == 13657574240290794872
    ids = [0, 1, 255, 256, 65535, 2**32 - 1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert hash_block(root, ids) == 17753475932017347943
    with pytest.raises(OverflowError):
        hash_block(root, [2**32])
    with pytest.raises(OverflowError):
        hash_block(root, [-1])
