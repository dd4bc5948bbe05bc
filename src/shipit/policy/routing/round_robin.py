"""``round_robin``: each request to the next replica with a free slot, in a fixed id order.

Owns a cursor (the last replica id chosen). Pure: no clock, no IO.
"""

from __future__ import annotations

from collections.abc import Sequence

from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import RouteDecision, candidates_for, no_candidate


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._last_id: str | None = None

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = sorted(candidates_for(replicas, now_s), key=lambda r: r.replica_id)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        chosen = candidates[0]
        if self._last_id is not None:
            chosen = next((r for r in candidates if r.replica_id > self._last_id), chosen)
        return RouteDecision(
            chosen.replica_id,
            self.name,
            "next_in_turn",
            f"next in turn after {self._last_id or '(start)'} among {len(candidates)} with a slot",
        )

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        if decision.replica_id is not None:
            self._last_id = decision.replica_id
