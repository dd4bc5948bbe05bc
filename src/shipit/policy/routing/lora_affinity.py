"""``lora_affinity``: send an adapter's requests to replicas that already hold it; otherwise
pick the least-loaded replica with a free adapter slot and say "load it there".

Requests for the base model go to the least-loaded replica. The router service acts on
``RouteDecision.load_adapter`` through the replicas' admin API. Pure: no clock, no IO.
"""

from __future__ import annotations

from collections.abc import Sequence

from shipit.config.gateway import LoraAffinityConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import (
    RouteDecision,
    candidates_for,
    lower_load,
    no_candidate,
    pick,
)


def _adapter_room(replica: ReplicaRecord) -> float:
    """Scorer: 1 when the replica has a free adapter slot (no eviction needed)."""
    return 1.0 if len(replica.adapters) < replica.max_adapters else 0.0


class LoraAffinity:
    name = "lora_affinity"

    def __init__(self, config: LoraAffinityConfig) -> None:
        self.config = config
        self._turn = 0

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = candidates_for(replicas, now_s)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        adapter = request.adapter
        if adapter is None:
            chosen = pick(candidates, [(1.0, lower_load)], tiebreak_offset=self._turn)
            return RouteDecision(chosen.replica_id, self.name, "base_model", "base model")
        holders = [
            r
            for r in candidates
            if adapter in r.adapters and r.load < self.config.max_load_for_affinity
        ]
        if holders:
            chosen = pick(holders, [(1.0, lower_load)], tiebreak_offset=self._turn)
            return RouteDecision(
                chosen.replica_id,
                self.name,
                "adapter_resident",
                f"{adapter!r} is loaded there ({len(holders)} holders with a slot)",
            )
        chosen = pick(
            candidates, [(10.0, _adapter_room), (1.0, lower_load)], tiebreak_offset=self._turn
        )
        room = "a free adapter slot" if _adapter_room(chosen) else "no free slot (LRU evicts)"
        return RouteDecision(
            chosen.replica_id,
            self.name,
            "adapter_load",
            f"no replica with a slot holds {adapter!r}; load it on the least loaded with {room}",
            load_adapter=adapter,
        )

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        self._turn += 1
