"""The ``prefix_affinity`` picker: the replica holding the longest cached prefix, queue-aware.

With headroom it sends a request to the replica holding the longest run of its prompt's
blocks, unless that unbalances the fleet (the guard: in requests, and, when the driver measures
paces, in tokens to compute: a holder is passed over when it would compute more than
``token_imbalance_ratio`` x the tokens the least-loaded replica would before this request's
first token, prefix recomputation included). When every holder of the longest prefix is at its
concurrency cap it decides between waiting for the holder and going elsewhere by comparing
expected times to the first token:

- at the holder: ``max(slot wait, backlog) + uncached prompt`` (tokens at the replica's
  measured prefill time a token, else ``prefill_us_per_token``), where the slot wait is
  ``(waiters ahead + 1) x service time / slots`` (a full replica frees a slot every
  ``service / slots`` seconds) and the backlog is its pending tokens x the prefill time a token;
- elsewhere: the best alternative's ``backlog + uncached prompt`` (it recomputes the prefix).

It waits (``wait_for_holder``, no replica, the holder named) while its wait for the holder (since
it first chose it, plus the slot wait expected) stays within ``max_affinity_wait_s``, when
either the holder's time is within ``token_imbalance_ratio`` x the alternative's, or the holder
is later by at most the alternative's ``max_concurrency`` x the prefill it would redo (the cost
rule: a recomputed prefix holds back every request sharing the alternative's steps, and on a
saturated fleet the slot the request leaves is taken by the next in line anyway). Past that
bound it waits on while the holder, the overrun added to its time, is still sooner than the
alternative (going elsewhere would make this request's first token later as well as recompute
its prefix), or, up to twice the bound, while the cost rule holds (a bound of 0 never waits).
Otherwise it goes elsewhere (``holder_busy``). Both reasons carry the figures. Pure: no clock,
no IO.
"""

from __future__ import annotations

from collections.abc import Sequence

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.base import Pick, RouteContext, pick
from shipit.policy.routing.prefix_cache import imbalance


def prompt_tokens(ctx: RouteContext) -> int:
    """The prompt's length in tokens: the edge's estimate, at least its hashed blocks."""
    request = ctx.request
    block = ctx.config.prefix_cache.block_size_tokens
    return max(request.prompt_tokens_estimate, len(request.prefix_hashes) * block)


def uncached_tokens(prompt: int, hit_blocks: int, block_size: int) -> int:
    """Prompt tokens a replica holding ``hit_blocks`` leading blocks still computes."""
    return max(prompt - hit_blocks * block_size, 0)


def _cost(ctx: RouteContext, replica: ReplicaRecord, prompt: int) -> int:
    """Tokens the replica computes before this request's first token: its backlog plus the
    uncached part of the prompt."""
    block = ctx.config.prefix_cache.block_size_tokens
    return ctx.pace(replica.replica_id).pending_tokens + uncached_tokens(
        prompt, ctx.hit(replica.replica_id), block
    )


def _least(
    ctx: RouteContext, candidates: Sequence[ReplicaRecord], totals: Sequence[float], prompt: int
) -> ReplicaRecord:
    """The candidate with the fewest tokens to compute (paces measured), else the best total."""
    if ctx.snapshot.paces:
        return candidates[
            pick(candidates, [-_cost(ctx, r, prompt) for r in candidates], offset=ctx.state.turn)
        ]
    return candidates[pick(candidates, totals, offset=ctx.state.turn)]


def per_token_s(ctx: RouteContext, replica: ReplicaRecord) -> float:
    """The replica's prefill time a token: measured by the driver, else the configured one."""
    measured = ctx.pace(replica.replica_id).prefill_s_per_token
    return measured if measured > 0 else configured_per_token_s(ctx)


def configured_per_token_s(ctx: RouteContext) -> float:
    """The configured prefill time a token (``prefix_cache.prefill_us_per_token``)."""
    return ctx.config.prefix_cache.prefill_us_per_token / 1e6


def slot_wait_s(ctx: RouteContext, holder: ReplicaRecord) -> float | None:
    """Expected wait for a slot on a full ``holder``; None while its service time is unmeasured."""
    pace = ctx.pace(holder.replica_id)
    if pace.service_s <= 0 or holder.max_concurrency < 1:
        return None
    return (pace.waiting + 1) * pace.service_s / holder.max_concurrency


def prefix_affinity(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    """Picker: the longest cached prefix, then the guard; when its holders are all full, wait
    for one or go elsewhere, whichever gives the first token sooner within the wait bound."""
    cfg = ctx.config.prefix_cache
    blocks = len(ctx.request.prefix_hashes)
    prompt = prompt_tokens(ctx)
    least = _least(ctx, candidates, totals, prompt)
    free_ids = {r.replica_id for r in candidates}
    versions = {r.version for r in candidates}
    # Full replicas of the candidates' version may still be worth waiting for.
    full = [r for r in ctx.ready if r.replica_id not in free_ids and r.version in versions]
    pool = [*candidates, *(r for r in full if not r.free_slots)] if ctx.hits else []
    best_hit = max((ctx.hit(r.replica_id) for r in pool), default=0)
    if best_hit < cfg.min_hit_blocks:  # min_hit_blocks >= 1: no hits at all lands here
        return Pick(
            least,
            "no_prefix_match",
            f"no cached prefix of {blocks} blocks; fewest to compute"
            if ctx.snapshot.paces
            else f"no cached prefix of {blocks} blocks; least loaded",
            prefix_hit_blocks=ctx.hit(least.replica_id),
        )
    held = [i for i, r in enumerate(candidates) if ctx.hit(r.replica_id) == best_hit]
    if held:
        # Equal holders: the one with the fewest tokens to compute (paces measured), so the
        # holders of a common prefix stay balanced in tokens, not only in requests.
        holders = [candidates[i] for i in held]
        best = _least(ctx, holders, [totals[i] for i in held], prompt)
        return _guarded(ctx, best, least, best_hit, blocks, prompt)
    busy = [r for r in pool if ctx.hit(r.replica_id) == best_hit]
    return _wait_or_go(ctx, busy, least, best_hit, blocks, prompt)


def _guarded(
    ctx: RouteContext,
    best: ReplicaRecord,
    least: ReplicaRecord,
    best_hit: int,
    blocks: int,
    prompt: int,
) -> Pick:
    """The holder with a free slot, unless it carries too many requests or too many tokens."""
    cfg = ctx.config.prefix_cache
    overloaded = imbalance(cfg, best, ctx.ready)
    if overloaded is None and ctx.snapshot.paces and least.replica_id != best.replica_id:
        there, here = _cost(ctx, best, prompt), _cost(ctx, least, prompt)
        if there > cfg.token_imbalance_ratio * here:
            overloaded = (
                f"it has {there} tokens to compute before this one's first token, "
                f"{least.replica_id} {here} (prefix included; ratio > "
                f"{cfg.token_imbalance_ratio:g})"
            )
    if overloaded and least.replica_id != best.replica_id:
        return Pick(
            least,
            "imbalance_guard",
            f"{best.replica_id} holds {best_hit} blocks but {overloaded}; "
            f"{least.replica_id} instead",
            prefix_hit_blocks=ctx.hit(least.replica_id),
        )
    return Pick(
        best,
        "prefix_hit",
        f"{best_hit}/{blocks} prompt blocks cached there",
        prefix_hit_blocks=best_hit,
    )


def _wait_or_go(
    ctx: RouteContext,
    busy: Sequence[ReplicaRecord],
    least: ReplicaRecord,
    best_hit: int,
    blocks: int,
    prompt: int,
) -> Pick:
    """Every holder of the longest prefix is full: wait for the soonest one, or go to
    ``least``, by expected time to the first token, within the wait bound."""
    cfg = ctx.config.prefix_cache
    waits = [slot_wait_s(ctx, r) for r in busy]
    known = [(w, r) for w, r in zip(waits, busy, strict=True) if w is not None]
    alt_hit = ctx.hit(least.replica_id)
    alt_s = _cost(ctx, least, prompt) * per_token_s(ctx, least)
    if not known:
        holder = busy[0]
        return Pick(
            least,
            "holder_busy",
            f"{holder.replica_id} holds {best_hit}/{blocks} blocks but is full "
            f"({holder.in_flight}/{holder.max_concurrency}) and its service time is not "
            f"measured yet; {least.replica_id} ({alt_hit} blocks cached)",
            prefix_hit_blocks=alt_hit,
        )
    wait_s, holder = min(known, key=lambda x: x[0])
    pace = ctx.pace(holder.replica_id)
    block = cfg.block_size_tokens
    token_s = per_token_s(ctx, holder)
    backlog_s = pace.pending_tokens * token_s
    holder_s = max(wait_s, backlog_s) + uncached_tokens(prompt, best_hit, block) * token_s
    # The prefill the alternative would redo, at its pace; it holds back every request
    # sharing that replica's steps, up to its slots.
    saved_s = (best_hit - alt_hit) * block * per_token_s(ctx, least)
    shared = least.max_concurrency
    later_s = holder_s - alt_s
    worth = later_s <= shared * saved_s
    since = ctx.snapshot.holding_since_s
    waited_s = 0.0 if since is None else max(ctx.snapshot.now_s - since, 0.0)
    figures = (
        f"{holder.replica_id} holds {best_hit}/{blocks} blocks and is full "
        f"({holder.in_flight}/{holder.max_concurrency}): slot in ~{wait_s:.2f} s "
        f"({pace.waiting} waiting, {pace.service_s:.2f} s a request), first token "
        f"~{holder_s:.2f} s there vs ~{alt_s:.2f} s on {least.replica_id} "
        f"(prefill saved {saved_s:.2f} s)"
    )
    cost = (
        f"{later_s:.2f} s later there, within {shared} x the {saved_s:.2f} s of prefill "
        f"{least.replica_id} would redo"
    )
    bound = cfg.max_affinity_wait_s
    slack = cfg.token_imbalance_ratio
    overrun_s = max(waited_s + wait_s - bound, 0.0)
    within = holder_s < slack * alt_s
    if overrun_s == 0.0 and (within or worth):
        return Pick(
            None,
            "wait_for_holder",
            f"{figures}; {'' if within else cost + '; '}waited {waited_s:.2f} s of {bound:g} s",
            prefix_hit_blocks=best_hit,
            wait_for=holder.replica_id,
        )
    sooner = holder_s + overrun_s < alt_s
    if bound > 0 and (sooner or (overrun_s < bound and worth)):
        # Past the bound, wait on while the holder, its overrun counted against it, stays
        # sooner (going elsewhere would make the first token later and recompute the prefix),
        # or, up to twice the bound, while it is worth the prefill it saves.
        return Pick(
            None,
            "wait_for_holder",
            f"{figures}; waited {waited_s:.2f} s, {overrun_s:.2f} s past the {bound:g} s "
            f"bound with the slot wait, {'still sooner there' if sooner else cost}",
            prefix_hit_blocks=best_hit,
            wait_for=holder.replica_id,
        )
    if overrun_s > 0.0:
        why = f"waited {waited_s:.2f} s, bound {bound:g} s, not sooner there"
    else:
        why = (
            f"over {slack:g}x later, and {later_s:.2f} s later is over {shared} x the prefill saved"
        )
    return Pick(least, "holder_busy", f"{figures}; {why}", prefix_hit_blocks=alt_hit)
