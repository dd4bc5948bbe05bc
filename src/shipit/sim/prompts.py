"""Simulated prompt content: token ids that share prefixes exactly as a trace's ``hash_ids`` say.

Block id ``h`` (``prefix_block_tokens`` tokens) becomes the tokens ``h x block + j``; tokens past
the ids' blocks are unique to the request. Equal ids at equal positions therefore give equal
tokens, so the engine's chained block hashes, its prefix cache and a router hashing the same
tokens see the trace's sharing structure, at the engine's own block size. Pure: no clock, no IO.
"""

from __future__ import annotations

from shipit.sim.results import SimRequest

# Unique tail tokens start here: above every id a trace block can produce (ids below 2**20
# of 512 tokens stay under 2**29), below 2**31 so they fit any int32 token id.
_UNIQUE_BASE = 1 << 30


def prompt_token_ids(spec: SimRequest, unique: int) -> list[int]:
    """The prompt of ``spec`` as token ids; ``unique`` (the request's index) keys its own tail."""
    n, block = spec.prompt_tokens, spec.prefix_block_tokens
    tokens: list[int] = []
    for h in spec.prefix_blocks:
        if len(tokens) >= n:
            break
        start = h * block
        tokens.extend(range(start, start + min(block, n - len(tokens))))
    if len(tokens) < n:
        base = _UNIQUE_BASE + (unique % (1 << 20)) * 512
        tokens.extend(base + (j % 512) for j in range(n - len(tokens)))
    return tokens
