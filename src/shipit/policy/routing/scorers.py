"""Routing scorers: how good each candidate replica is for a request. The ``SCORERS`` registry.

A scorer takes the decision's ``RouteContext`` and the candidates the filters kept, and
returns one score per candidate (higher is better); a composition adds them up with the
weights of ``routing.scorers``, so scorers combine. Scales: ``load`` is 0 for an idle replica
and -1 for a full one; ``prefill`` is minus the seconds of prompt the replica computes before
this request's first token; ``kv_cache`` is the share of KV cache free; the affinity scorers
(``prefix_cache``, ``lora``, ``session``) lie in [0, 1]. Adding a scorer is one entry in
``SCORERS``. Pure: no clock, no IO, no state.
"""

from __future__ import annotations

from collections.abc import Callable

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.affinity import configured_per_token_s, prompt_tokens
from shipit.policy.routing.base import RouteContext, lower_load
from shipit.policy.routing.lora_affinity import lora_score
from shipit.policy.routing.prefix_cache import prefix_score
from shipit.policy.routing.session_affinity import session_score

Scorer = Callable[[RouteContext, tuple[ReplicaRecord, ...]], tuple[float, ...]]


def load_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """Fewer in flight relative to ``max_concurrency``; the replica's own queue breaks ties."""
    return tuple([lower_load(r) for r in candidates])


def prefill_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """Minus the seconds of prompt the replica computes before this request's first token: the
    prompts placed there and not yet computed, and this one's uncached part, at the replica's
    measured prefill time a token (the configured one until measured). A replica counts its
    requests, not their length: one holding a 12,000-token prompt still to compute reads as
    idle as one holding a short one, and a request sent there waits that whole prefill for
    its first token. 0 everywhere while the driver measures no paces."""
    if not ctx.snapshot.paces:
        return (0.0,) * len(candidates)
    prompt = prompt_tokens(ctx)
    block = ctx.config.prefix_cache.block_size_tokens
    scores = []
    for r in candidates:  # per candidate, every decision: one pace lookup, no helper calls
        pace = ctx.pace(r.replica_id)
        uncached = prompt - ctx.hits.get(r.replica_id, 0) * block if ctx.hits else prompt
        measured = pace.prefill_s_per_token
        per_token = measured if measured > 0 else configured_per_token_s(ctx)
        scores.append(-(pace.pending_tokens + (uncached if uncached > 0 else 0)) * per_token)
    return tuple(scores)


def kv_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """The share of the replica's KV cache that is free (vLLM's ``kv_cache_usage_perc``)."""
    return tuple(1.0 - r.kv_usage for r in candidates)


SCORERS: dict[str, Scorer] = {
    "load": load_score,
    "prefill": prefill_score,
    "kv_cache": kv_score,
    "prefix_cache": prefix_score,
    "lora": lora_score,
    "session": session_score,
}
