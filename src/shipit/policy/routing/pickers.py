"""Routing pickers: which one of the scored candidates takes the request. The ``PICKERS``
registry.

A picker gets the decision's ``RouteContext``, the candidates and their weighted total scores,
and returns a ``Pick`` with its reason. ``best`` takes the highest total (ties rotate with the
state's turn, so an idle fleet spreads requests); ``power_of_two`` samples two with the
counter-based generator (seed from config, position from the state) and takes the better;
``round_robin`` ignores scores and takes the next replica id after the last one. The affinity
pickers (``prefix_affinity``, ``lora_affinity``, ``session_affinity``) are the strict
preferences the presets use: holders first, then the best total. Adding a picker is one entry
in ``PICKERS``. Pure: no clock, no IO; what changes goes back through ``Pick``.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.affinity import prefix_affinity
from shipit.policy.routing.base import Pick, RouteContext, draw, pick
from shipit.policy.routing.lora_affinity import lora_affinity
from shipit.policy.routing.session_affinity import session_affinity

Picker = Callable[[RouteContext, tuple[ReplicaRecord, ...], tuple[float, ...]], Pick]


# A composition's scorers -> how ``best`` words its decision ("load", "work" or "score"): found
# once per composition, not on every decision.
_BEST_KIND: dict[tuple[tuple[str, float], ...], str] = {}


def best(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    i = pick(candidates, totals, offset=ctx.state.turn)
    chosen = candidates[i]
    hits = ctx.hit(chosen.replica_id)
    kind = _BEST_KIND.get(ctx.weights)
    if kind is None:
        names = {name for name, _ in ctx.weights}
        kind = _BEST_KIND[ctx.weights] = (
            "load" if names <= {"load"} else "work" if names == {"load", "prefill"} else "score"
        )
    if kind == "load":
        why = f"fewest in flight: {chosen.in_flight}/{chosen.max_concurrency}"
        return Pick(chosen, "least_loaded", why, prefix_hit_blocks=hits)
    if kind == "work":  # least outstanding work
        why = (
            f"least outstanding: {chosen.in_flight}/{chosen.max_concurrency} in flight, "
            f"{ctx.pace(chosen.replica_id).pending_tokens} prompt tokens to compute"
        )
        return Pick(chosen, "least_loaded", why, prefix_hit_blocks=hits)
    terms = ", ".join(f"{name} x{w:g}" for name, w in ctx.weights)
    why = f"highest score {totals[i]:.3f} ({terms}) of {len(candidates)} with a slot"
    return Pick(chosen, "best_score", why, prefix_hit_blocks=hits)


def power_of_two(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    n = len(candidates)
    if n == 1:
        only = candidates[0]
        return Pick(
            only, "only_candidate", "one with a slot", prefix_hit_blocks=ctx.hit(only.replica_id)
        )
    x = draw(ctx.config.seed, ctx.state.draws)
    i = x % n
    j = (x >> 32) % (n - 1)
    j += j >= i  # two distinct candidates
    a, b = (i, j) if totals[i] >= totals[j] else (j, i)
    chosen, other = candidates[a], candidates[b]
    return Pick(
        chosen,
        "lower_of_two",
        f"{chosen.replica_id} ({chosen.in_flight} in flight) over "
        f"{other.replica_id} ({other.in_flight})",
        prefix_hit_blocks=ctx.hit(chosen.replica_id),
        draws=1,
    )


_BY_ID = attrgetter("replica_id")


def round_robin(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    ordered = sorted(candidates, key=_BY_ID)
    last = ctx.state.last_id
    chosen = ordered[0]
    if last is not None:
        chosen = next((r for r in ordered if r.replica_id > last), chosen)
    return Pick(
        chosen,
        "next_in_turn",
        f"next in turn after {last or '(start)'} among {len(ordered)} with a slot",
        prefix_hit_blocks=ctx.hit(chosen.replica_id),
    )


PICKERS: dict[str, Picker] = {
    "best": best,
    "power_of_two": power_of_two,
    "round_robin": round_robin,
    "prefix_affinity": prefix_affinity,
    "lora_affinity": lora_affinity,
    "session_affinity": session_affinity,
}
# What an affinity picker reads, named as the like-minded scorer (``RoutePlan.uses``).
PICKER_READS: dict[str, str] = {
    "prefix_affinity": "prefix_cache",
    "lora_affinity": "lora",
    "session_affinity": "session",
}
