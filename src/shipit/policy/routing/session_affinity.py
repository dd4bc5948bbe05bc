"""Session routing: the same session key goes to the same replica, by consistent hashing with
bounded load (a replica above ``load_bound`` x the mean passes the session on along the ring).

Owns the ring (``ring_for``: ``virtual_nodes`` points per ready replica, a ``SessionRing``
record carried in ``RoutingState`` and rebuilt only when the set of ready replicas changes),
``session_home`` (where a key lands), the ``session`` scorer (1 there, else 0) and the
``session_affinity`` picker. Requests without a key go to the best-scored replica. Pure: no
clock, no IO; the ring comes in with the state and goes out with it.
"""

from __future__ import annotations

import bisect
import hashlib
import math

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.base import Pick, RouteContext, SessionRing, pick


def _point(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def ring_for(ring: SessionRing, ids: frozenset[str], virtual_nodes: int) -> SessionRing:
    """``ring`` when it already covers exactly ``ids``, else a new ring over them."""
    if ids == ring.ids:
        return ring
    pairs = sorted((_point(f"{rid}#{v}"), rid) for rid in ids for v in range(virtual_nodes))
    return SessionRing(ids, tuple(p for p, _ in pairs), tuple(o for _, o in pairs))


def session_home(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], key: str
) -> tuple[ReplicaRecord | None, str | None, int]:
    """The first replica along the ring from ``key`` that has a slot and stays within the
    load bound; the key's home (the first owner); and the bound."""
    ready = ctx.ready
    by_id = {r.replica_id: r for r in candidates}
    bound = math.ceil(
        ctx.config.session_affinity.load_bound * (sum(r.in_flight for r in ready) + 1) / len(ready)
    )
    points, owners = ctx.state.ring.points, ctx.state.ring.owners
    start = bisect.bisect(points, _point(key))
    home: str | None = None
    for i in range(len(points)):
        owner = owners[(start + i) % len(points)]
        home = home or owner
        r = by_id.get(owner)
        if r is not None and r.in_flight + 1 <= bound:
            return r, home, bound
    return None, home, bound


def session_score(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    """Scorer ``session``: 1 for where the session key lands (within the bound), else 0."""
    key = ctx.request.session_key
    target = session_home(ctx, candidates, key)[0] if key is not None else None
    return tuple(1.0 if target is not None and r is target else 0.0 for r in candidates)


def session_affinity(
    ctx: RouteContext, candidates: tuple[ReplicaRecord, ...], totals: tuple[float, ...]
) -> Pick:
    """Picker: the session's home, or the next replica along the ring within the bound;
    the best-scored replica when there is no key or every one is above the bound."""
    key = ctx.request.session_key
    turn = ctx.state.turn
    if key is None:
        return Pick(
            candidates[pick(candidates, totals, offset=turn)], "no_session", "no session key"
        )
    chosen, home, bound = session_home(ctx, candidates, key)
    if chosen is None:
        best = candidates[pick(candidates, totals, offset=turn)]
        return Pick(best, "session_spill", "all above the bound")
    if chosen.replica_id == home:
        return Pick(chosen, "session_home", "session key: its home on the ring")
    return Pick(chosen, "session_spill", f"session key: home {home} is above {bound}")
