"""The cost rule for ``prefix_cache``'s wait decision as the sweep first ran it, a patch.

``--patch routing_sweep_variants:cost:slots`` replaces the picker's wait-or-go step: besides
waiting while the holder's first token is within ``token_imbalance_ratio`` x the alternative's
(and the wait bound), also wait when the holder is later by at most ``k`` x the prefill the
alternative would redo (``k``: ``slots``, the alternative's ``max_concurrency``; ``inflight``,
its requests in flight + 1; or a number), and past the bound while still within twice it.
``cost:slots`` is now the policy's own rule (``policy.routing.affinity``; the same decisions,
checked on one replay); the patch remains to rerun the sweep's rows as they ran, or other ``k``.
Measured in docs/gateway.md ("The holder's slack and the wait decision")."""

from __future__ import annotations

from collections.abc import Sequence

import shipit.policy.routing.affinity as affinity
from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.base import Pick, RouteContext

ORIGINAL = affinity._wait_or_go


def cost_rule(k_mode: str):  # type: ignore[no-untyped-def]
    def wait_or_go(
        ctx: RouteContext,
        busy: Sequence[ReplicaRecord],
        least: ReplicaRecord,
        best_hit: int,
        blocks: int,
        prompt: int,
    ) -> Pick:
        cfg = ctx.config.prefix_cache
        waits = [affinity.slot_wait_s(ctx, r) for r in busy]
        known = [(w, r) for w, r in zip(waits, busy, strict=True) if w is not None]
        if not known:
            return ORIGINAL(ctx, busy, least, best_hit, blocks, prompt)
        wait_s, holder = min(known, key=lambda x: x[0])
        pace = ctx.pace(holder.replica_id)
        block = cfg.block_size_tokens
        token_s = affinity.per_token_s(ctx, holder)
        alt_hit = ctx.hit(least.replica_id)
        alt_s = affinity._cost(ctx, least, prompt) * affinity.per_token_s(ctx, least)
        backlog_s = pace.pending_tokens * token_s
        uncached = affinity.uncached_tokens(prompt, best_hit, block)
        holder_s = max(wait_s, backlog_s) + uncached * token_s
        saved_s = (best_hit - alt_hit) * block * affinity.per_token_s(ctx, least)
        since = ctx.snapshot.holding_since_s
        waited_s = 0.0 if since is None else max(ctx.snapshot.now_s - since, 0.0)
        bound = cfg.max_affinity_wait_s
        overrun_s = max(waited_s + wait_s - bound, 0.0)
        if k_mode == "inflight":
            k = float(least.in_flight + 1)
        elif k_mode == "slots":
            k = float(least.max_concurrency)
        else:
            k = float(k_mode)
        worth = holder_s - alt_s <= k * saved_s
        within = holder_s < cfg.token_imbalance_ratio * alt_s
        if overrun_s == 0.0 and (within or worth):
            return Pick(
                None,
                "wait_for_holder",
                "cost",
                prefix_hit_blocks=best_hit,
                wait_for=holder.replica_id,
            )
        if bound > 0 and (holder_s + overrun_s < alt_s or (overrun_s < bound and worth)):
            return Pick(
                None,
                "wait_for_holder",
                "cost, past the bound",
                prefix_hit_blocks=best_hit,
                wait_for=holder.replica_id,
            )
        return Pick(least, "holder_busy", "cost", prefix_hit_blocks=alt_hit)

    return wait_or_go


def apply(name: str) -> None:
    if not name.startswith("cost:"):
        raise SystemExit(f"unknown variant {name!r}; use cost:slots, cost:inflight or cost:K")
    affinity._wait_or_go = cost_rule(name.removeprefix("cost:"))
