"""LoRA routing: send an adapter's requests to replicas that already hold it; otherwise to one
with a free adapter slot, and say "load it there".

Owns the ``lora`` scorer (1 where the adapter is resident, 0.5 where a slot is free, else 0)
and the ``lora_affinity`` picker (the best-scored holder below ``max_load_for_affinity``; else
the best-scored replica, preferring a free adapter slot, with ``load_adapter`` set). Requests
for the base model score 0 and go to the best-scored replica. The router service acts on
``RouteDecision.load_adapter`` through the replicas' admin API. Pure: no clock, no IO.
"""

from __future__ import annotations

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.base import Pick, RouteContext, pick


def adapter_room(replica: ReplicaRecord) -> float:
    """1 when the replica has a free adapter slot (no eviction needed)."""
    return 1.0 if len(replica.adapters) < replica.max_adapters else 0.0


def lora_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """Scorer ``lora``: 1 where the request's adapter is resident, 0.5 where it could be
    loaded without evicting another, else 0; 0 everywhere for the base model."""
    adapter = ctx.request.adapter
    if adapter is None:
        return tuple(0.0 for _ in candidates)
    return tuple(1.0 if adapter in r.adapters else 0.5 * adapter_room(r) for r in candidates)


def lora_affinity(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    """Picker: a holder of the adapter below ``max_load_for_affinity``, best-scored first;
    else the best-scored replica with a free adapter slot weighing 10, told to load it."""
    turn = ctx.state.turn
    adapter = ctx.request.adapter
    if adapter is None:
        return Pick(candidates[pick(candidates, totals, offset=turn)], "base_model", "base model")
    limit = ctx.config.lora_affinity.max_load_for_affinity
    held = [i for i, r in enumerate(candidates) if adapter in r.adapters and r.load < limit]
    if held:
        i = held[pick([candidates[i] for i in held], [totals[i] for i in held], offset=turn)]
        return Pick(
            candidates[i],
            "adapter_resident",
            f"{adapter!r} is loaded there ({len(held)} holders with a slot)",
        )
    scores = [10.0 * adapter_room(r) + t for r, t in zip(candidates, totals, strict=True)]
    chosen = candidates[pick(candidates, scores, offset=turn)]
    room = "a free adapter slot" if adapter_room(chosen) else "no free slot (LRU evicts)"
    return Pick(
        chosen,
        "adapter_load",
        f"no replica with a slot holds {adapter!r}; load it on the least loaded with {room}",
        load_adapter=adapter,
    )
