"""``least_outstanding``: the replica with the fewest requests in flight (relative to its target).

Ties rotate so an idle fleet spreads sequential requests. Pure: no clock, no IO.
"""

from __future__ import annotations

from collections.abc import Sequence

from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import (
    RouteDecision,
    candidates_for,
    lower_load,
    no_candidate,
    pick,
)


class LeastOutstanding:
    name = "least_outstanding"

    def __init__(self) -> None:
        self._turn = 0

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = candidates_for(replicas, now_s)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        chosen = pick(candidates, [(1.0, lower_load)], tiebreak_offset=self._turn)
        return RouteDecision(
            chosen.replica_id,
            self.name,
            "least_loaded",
            f"fewest in flight: {chosen.in_flight}/{chosen.max_concurrency}",
        )

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        self._turn += 1
