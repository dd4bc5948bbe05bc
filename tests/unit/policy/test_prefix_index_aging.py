"""The prefix index forgets a replica's prefixes in the order the replica's own KV cache
evicts them.

The replica (``engine.block_manager``) frees a finished request's blocks tail first and puts
blocks without a hash (a partial last block) at the front of its free list, so under pressure it
evicts an old prompt's tail and keeps its head: the leading blocks a follow-up turn reuses. The
index (recording what it routed) must age the same way, or it reports no hit on a replica that
still holds most of the prompt. Each test drives a real ``BlockManager`` and the index with the
same requests, one after the other, and compares what both say a later prompt would reuse.
"""

from __future__ import annotations

from shipit.config.gateway import PrefixCacheConfig
from shipit.core.views import RequestView
from shipit.engine.block_manager import BlockManager, hash_prompt_blocks
from shipit.engine.sampling import SamplingParams
from shipit.engine.sequence import Sequence
from shipit.policy.routing import PrefixIndex
from shipit.policy.routing.prefix_cache import record_routed

BLOCK = 4
CONFIG = PrefixCacheConfig(block_size_tokens=BLOCK)


def _serve(blocks: BlockManager, tokens: list[int], output: int, n: int) -> None:
    """One request through the replica's cache: its prompt and output computed, then freed."""
    seq = Sequence(f"s{n}", list(tokens), SamplingParams(max_tokens=max(output, 1)), n)
    cached = blocks.match_prefix(seq)
    assert blocks.allocate(seq, len(tokens) + output - len(cached) * BLOCK, cached)
    seq.output_token_ids.extend(10_000 + n * 100 + j for j in range(output))
    seq.num_computed_tokens = len(tokens) + output
    blocks.cache_full_blocks(seq)
    blocks.free(seq)


def _replica_hit(blocks: BlockManager, tokens: list[int]) -> int:
    seq = Sequence("probe", list(tokens), SamplingParams(max_tokens=1), 99)
    return len(blocks.match_prefix(seq))


def _view(tokens: list[int], output: int) -> RequestView:
    return RequestView(
        request_id="q",
        deployment="d",
        model="m",
        prefix_hashes=tuple(hash_prompt_blocks(tokens, BLOCK)),
        prompt_tokens_estimate=len(tokens),
        max_tokens=output,
    )


def _both(capacity: int, prompts: list[tuple[list[int], int]]) -> tuple[BlockManager, PrefixIndex]:
    blocks = BlockManager(capacity, BLOCK)
    index = PrefixIndex(max_blocks_per_replica=capacity)
    for n, (tokens, output) in enumerate(prompts):
        record_routed(index, CONFIG, _view(tokens, output), "a")
        _serve(blocks, tokens, output, n)
    return blocks, index


def test_an_old_prompts_head_outlives_its_tail_as_in_the_replica() -> None:
    # A 6-block prompt, then an unrelated 4-block one, in an 8-block cache: the replica evicts
    # two blocks of the first prompt, from its tail; its first 4 blocks are still cached.
    first = list(range(24))
    other = list(range(100, 116))
    blocks, index = _both(8, [(first, 0), (other, 0)])
    follow_up = [*first, 500, 501, 502, 503]  # the next turn: the first prompt, then more
    assert _replica_hit(blocks, follow_up) == 4
    assert index.match_blocks("a", _view(follow_up, 0).prefix_hashes) == 4


def test_a_shared_head_and_a_conversation_age_as_in_the_replica() -> None:
    # Every prompt opens with the same 2 blocks; a conversation's first turn is followed by
    # three other prompts of 6 blocks before its next turn, in a 16-block cache.
    head = list(range(8))
    turn = [*head, *range(1000, 1016)]  # 6 blocks, 2 shared
    others = [([*head, *range(2000 + 100 * k, 2000 + 100 * k + 16)], 0) for k in range(3)]
    blocks, index = _both(16, [(turn, 0), *others])
    follow_up = [*turn, *range(3000, 3008)]
    hashes = _view(follow_up, 0).prefix_hashes
    assert _replica_hit(blocks, follow_up) == 4  # 2 shared + 2 of the turn's own 4
    assert index.match_blocks("a", hashes) == _replica_hit(blocks, follow_up)


def test_outputs_full_blocks_are_evicted_before_the_prompt_and_partial_ones_take_no_room() -> None:
    # A 3-block prompt with a 6-token output: one full output block (cached by the replica,
    # the request's oldest) and a partial one (no hash: free space at once). Then a 5-block
    # prompt in an 8-block cache: the replica evicts the output block and keeps the prompt.
    first = list(range(12))
    blocks, index = _both(8, [(first, 6), (list(range(100, 120)), 0)])
    follow_up = [*first, 7, 7, 7, 7, 7]
    assert _replica_hit(blocks, follow_up) == 3
    assert index.match_blocks("a", _view(follow_up, 0).prefix_hashes) == 3
