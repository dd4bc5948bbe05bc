"""``session_affinity``: the same session key goes to the same replica, by consistent hashing
with bounded load (a replica above ``load_bound`` x the mean passes the session on along the ring).

Requests without a key go to the least-loaded replica. The ring (``virtual_nodes`` points per
replica) is rebuilt only when the set of replicas changes. Pure: no clock, no IO.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence

from shipit.config.gateway import SessionAffinityConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import (
    RouteDecision,
    candidates_for,
    lower_load,
    no_candidate,
    pick,
    routable,
)


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


class SessionAffinity:
    name = "session_affinity"

    def __init__(self, config: SessionAffinityConfig) -> None:
        self.config = config
        self._ring_ids: frozenset[str] = frozenset()
        self._points: list[int] = []
        self._owners: list[str] = []
        self._turn = 0

    def _ring(self, ids: frozenset[str]) -> None:
        if ids == self._ring_ids:
            return
        pairs = sorted(
            (_point(f"{rid}#{v}"), rid) for rid in ids for v in range(self.config.virtual_nodes)
        )
        self._ring_ids = ids
        self._points = [p for p, _ in pairs]
        self._owners = [o for _, o in pairs]

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        candidates = candidates_for(replicas, now_s)
        if not candidates:
            return no_candidate(self.name, replicas, now_s)
        if request.session_key is None:
            chosen = pick(candidates, [(1.0, lower_load)], tiebreak_offset=self._turn)
            return RouteDecision(chosen.replica_id, self.name, "no_session", "no session key")
        # The ring covers every ready replica, so a session keeps its home while it is busy.
        ready = routable(replicas, now_s)
        self._ring(frozenset(r.replica_id for r in ready))
        by_id = {r.replica_id: r for r in candidates}
        bound = math.ceil(
            self.config.load_bound * (sum(r.in_flight for r in ready) + 1) / len(ready)
        )
        start = bisect.bisect(self._points, _point(request.session_key))
        home: str | None = None
        for i in range(len(self._points)):
            owner = self._owners[(start + i) % len(self._points)]
            home = home or owner
            r = by_id.get(owner)
            if r is not None and r.in_flight + 1 <= bound:
                code = "session_home" if owner == home else "session_spill"
                why = "its home on the ring" if owner == home else f"home {home} is above {bound}"
                return RouteDecision(r.replica_id, self.name, code, f"session key: {why}")
        chosen = pick(candidates, [(1.0, lower_load)], tiebreak_offset=self._turn)
        return RouteDecision(chosen.replica_id, self.name, "session_spill", "all above the bound")

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        self._turn += 1
