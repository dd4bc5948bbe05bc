"""Global routing: which workload plane serves a request, from where its client is.

``decide(config, snapshot) -> GlobalRouteDecision``: the snapshot is the client's place on the
clock (UTC offset), an optional data-residency tag the request must stay within, the planes
already tried for it, and one ``PlaneView`` per plane (serving or not, free slots, queue). The
latency model is ``ms_per_time_zone`` per hour of clock apart, the short way round (about 5 ms a
time zone; a client in UTC-5 is 30 ms from a plane in UTC+1). The nearest serving plane with a
free slot wins (``nearest``); when the nearest is full, the next nearest with room takes the
request (``spilled``), unless that would add more than ``max_spill_ms`` (then it waits at the
nearest: ``queued_nearest``); when every plane is full, the one with the shortest queue per
slot takes it, ties to the nearer (``all_full``). A plane not serving (down, or a standby not
promoted), already tried, or outside the residency tag is never chosen; with none left the
decision names why (``no_plane``). ``order`` lists every eligible plane, best first, for the
driver's retries. Stateless and pure: no clock, no IO; the front door and the fleet simulator
call it with their own snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GlobalRoutingConfig:
    ms_per_time_zone: float = 5.0
    max_spill_ms: float | None = None  # most extra latency a spill may add; None: no bound


@dataclass(frozen=True, slots=True)
class PlaneView:
    """One plane as the front door sees it now."""

    name: str
    utc_offset_h: float
    serving: bool  # healthy and active (or a promoted standby)
    free_slots: int  # ready capacity not in use at its gateway
    queued: int = 0  # requests waiting at its gateway
    slots: int = 0  # all ready capacity (free or not)
    residency: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class GlobalRouteSnapshot:
    client_utc_offset_h: float
    planes: tuple[PlaneView, ...]
    residency: str | None = None  # the request may only go to planes with this tag
    tried: frozenset[str] = frozenset()  # planes this request already failed on


@dataclass(frozen=True, slots=True)
class GlobalRouteDecision:
    plane: str | None
    order: tuple[str, ...]  # every eligible plane, best first (the chosen one first)
    latency_ms: float  # the network latency model's figure to the chosen plane
    reason_code: str  # nearest, spilled, queued_nearest, all_full, no_plane
    reason: str


def clock_distance_h(a_h: float, b_h: float) -> float:
    """Hours apart on a 24-hour clock, the short way round."""
    d = abs(a_h - b_h) % 24.0
    return min(d, 24.0 - d)


def latency_ms(client_h: float, plane_h: float, ms_per_time_zone: float) -> float:
    return clock_distance_h(client_h, plane_h) * ms_per_time_zone


def _ineligible(snapshot: GlobalRouteSnapshot) -> str:
    why = []
    for p in snapshot.planes:
        if p.name in snapshot.tried:
            why.append(f"{p.name} already tried")
        elif not p.serving:
            why.append(f"{p.name} not serving")
        elif snapshot.residency is not None and snapshot.residency not in p.residency:
            why.append(f"{p.name} outside residency {snapshot.residency!r}")
    return "; ".join(why) or "no planes configured"


def decide(config: GlobalRoutingConfig, snapshot: GlobalRouteSnapshot) -> GlobalRouteDecision:
    here = snapshot.client_utc_offset_h
    eligible: Sequence[PlaneView] = [
        p
        for p in snapshot.planes
        if p.serving
        and p.name not in snapshot.tried
        and (snapshot.residency is None or snapshot.residency in p.residency)
    ]
    if not eligible:
        return GlobalRouteDecision(
            None, (), 0.0, "no_plane", f"no plane can take it: {_ineligible(snapshot)}"
        )

    def away(p: PlaneView) -> float:
        return latency_ms(here, p.utc_offset_h, config.ms_per_time_zone)

    by_distance = sorted(eligible, key=lambda p: (away(p), p.name))
    nearest = by_distance[0]
    with_room = [p for p in by_distance if p.free_slots > 0]
    if with_room and with_room[0] is nearest:
        chosen, code = nearest, "nearest"
        reason = (
            f"{nearest.name} is nearest ({away(nearest):.0f} ms) with {nearest.free_slots} free"
        )
    elif with_room:
        spill = with_room[0]
        extra = away(spill) - away(nearest)
        if config.max_spill_ms is not None and extra > config.max_spill_ms:
            chosen, code = nearest, "queued_nearest"
            reason = (
                f"{nearest.name} is full; {spill.name} has room but is {extra:.0f} ms further, "
                f"over max_spill_ms={config.max_spill_ms:g}: waits at {nearest.name}"
            )
        else:
            chosen, code = spill, "spilled"
            reason = (
                f"{nearest.name} (nearest) is full; spilled to {spill.name}, "
                f"{spill.free_slots} free, +{extra:.0f} ms"
            )
    else:

        def backlog(p: PlaneView) -> tuple[float, float, str]:
            return ((p.queued + 1) / max(p.slots, 1), away(p), p.name)

        chosen = min(by_distance, key=backlog)
        code = "all_full"
        reason = (
            f"every eligible plane is full; {chosen.name} has the shortest queue per slot "
            f"({chosen.queued} waiting, {chosen.slots} slots)"
        )
    order = (chosen.name, *(p.name for p in by_distance if p is not chosen))
    return GlobalRouteDecision(chosen.name, order, away(chosen), code, reason)
