"""``power_of_two``: sample two replicas with a free slot, send to the less loaded one.

Randomness comes from a seeded ``random.Random`` owned by the policy, so runs replay exactly.
Pure: no clock, no IO.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import RouteDecision, candidates_for, lower_load, no_candidate


class PowerOfTwo:
    name = "power_of_two"

    def __init__(self, *, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = candidates_for(replicas, now_s)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        if len(candidates) == 1:
            only = candidates[0]
            return RouteDecision(only.replica_id, self.name, "only_candidate", "one with a slot")
        a, b = self._rng.sample(candidates, 2)
        chosen, other = (a, b) if lower_load(a) >= lower_load(b) else (b, a)
        return RouteDecision(
            chosen.replica_id,
            self.name,
            "lower_of_two",
            f"{chosen.replica_id} ({chosen.in_flight} in flight) over "
            f"{other.replica_id} ({other.in_flight})",
        )

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        return None
