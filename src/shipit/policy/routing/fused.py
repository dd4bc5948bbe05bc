"""The default composition (least outstanding work) decided in one pass.

``least_outstanding`` is the standard filters (``routable``, ``free_slot``,
``version_weight``), the ``prefill`` and ``load`` scorers at weight 1 and the ``best`` picker.
Composed, one decision makes about thirty Python calls (a context, a result per filter, a
tuple per scorer, the pick); on a gateway that is idle between requests each call runs with
cold caches, and that Python sits between a request's arrival and its upstream request, so it
adds to every time to first token. ``decide_work`` gives the same decision, the same reason and
the same next state in one function and one loop over the replicas.

Pure, like the parts it stands for. ``pipeline.decide`` uses it for a plan of exactly that
composition (a preset's or a ``custom`` one) when no rollout weighs versions; everything else
goes through the composed parts. A test draws random snapshots and checks this function against
the composed plan, field by field.
"""

from __future__ import annotations

from shipit.config.gateway import RoutingConfig
from shipit.core.fleet import ReplicaState
from shipit.policy.routing.base import RouteDecision, RouteSnapshot, RoutingState


def decide_work(
    name: str, config: RoutingConfig, snapshot: RouteSnapshot, state: RoutingState
) -> tuple[RouteDecision, RoutingState]:
    now = snapshot.now_s
    replicas = snapshot.replicas
    ready = 0
    free = []
    for r in replicas:  # routable: ready and not ejected; free_slot: below its cap
        if r.state is ReplicaState.READY and (
            r.ejected_until_s is None or r.ejected_until_s <= now
        ):
            ready += 1
            if r.in_flight < r.max_concurrency:
                free.append(r)
    if not ready:
        why = f"none of {len(replicas)} replicas is ready"
        return RouteDecision(None, name, "no_ready_replica", why), state
    if not free:
        why = f"all {ready} ready replicas are at their concurrency target"
        return RouteDecision(None, name, "all_busy", why), state
    hits = dict(snapshot.prefix_hits) if snapshot.prefix_hits else None
    paces = {p.replica_id: p for p in reversed(snapshot.paces)} if snapshot.paces else None
    prompt = 0
    block = config.prefix_cache.block_size_tokens
    if paces is not None:
        request = snapshot.request
        prompt = max(request.prompt_tokens_estimate, len(request.prefix_hashes) * block)
    configured_s = config.prefix_cache.prefill_us_per_token / 1e6
    n = len(free)
    totals = []
    for r in free:
        work = 0.0  # prefill: minus the seconds of prompt computed before the first token
        if paces is not None:
            pace = paces.get(r.replica_id)
            pending, measured = (
                (pace.pending_tokens, pace.prefill_s_per_token) if pace is not None else (0, 0.0)
            )
            uncached = prompt - hits.get(r.replica_id, 0) * block if hits else prompt
            per_token = measured if measured > 0 else configured_s
            work = -(pending + (uncached if uncached > 0 else 0)) * per_token
        cap = r.max_concurrency
        load = r.in_flight / cap if cap else 1.0
        # Summed as the composed plan sums (from 0.0, each score times its weight 1.0), so
        # that ties and totals are the same floats, not just nearly.
        totals.append(0.0 + 1.0 * work + 1.0 * -(load + 0.001 * r.queue_depth))
    # best: the highest total; ties go to the first at or after the turn (mod the count).
    best, best_total = -1, float("-inf")
    offset = state.turn
    for i in range(n):
        j = (i + offset) % n
        if totals[j] > best_total:
            best, best_total = j, totals[j]
    chosen = free[best]
    rid = chosen.replica_id
    pace = paces.get(rid) if paces is not None else None
    why = (
        f"least outstanding: {chosen.in_flight}/{chosen.max_concurrency} in flight, "
        f"{pace.pending_tokens if pace is not None else 0} prompt tokens to compute"
    )
    hit = hits.get(rid, 0) if hits else 0
    decision = RouteDecision(rid, name, "least_loaded", why, None, hit)
    return decision, RoutingState(state.turn + 1, rid, state.draws, state.ring)
