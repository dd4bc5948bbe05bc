"""Placement: how many replicas each workload plane should run, from demand per client region.

``decide(config, snapshot) -> PlacementDecision``: the snapshot is the demand of each client
region in replicas (its rate times the service time over what a replica should carry), where
the region is on the clock and the residency tag its requests must stay within, and one
``PlaneCapacity`` per plane (serving or not, the most replicas its pools can supply, the price
of its cheapest pool with room, its residency tags and configured floor).

The control plane fills the most constrained demand first (regions pinned by residency, then
the larger demand), each from its nearest serving plane (latency ``ms_per_time_zone`` per hour
of clock apart, as global routing counts it); among planes within ``latency_slack_ms`` of the
nearest the cheaper fills first (``cheaper``). When a plane's capacity runs out the rest
spills to the next (``spilled``); demand no serving plane within its residency can take is
``unplaced``. Each serving plane then gets a target (the replicas assigned to it, rounded up)
and the bounds its own autoscaler works inside: ``floor`` x target below (never under the
plane's own ``min_replicas``), ``headroom`` x target + 1 above (never over its capacity), so
each plane follows its load between placements without taking a neighbour's. A plane filled to
its capacity is held there (``full``): demand spills past it to the next plane, so its own
autoscaler, which sees only what reaches it, would undershoot. A plane not
serving keeps its configured floor (a warm standby) and gets no demand (``not_serving``).

Pure: no clock, no IO; the fleet simulator calls it every placement interval and when the
serving planes change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.policy.global_routing import latency_ms


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    ms_per_time_zone: float = 5.0
    latency_slack_ms: float = 0.0  # planes this close to the nearest compete on price
    headroom: float = 1.25  # the plane's autoscaler may go to headroom x target + 1
    floor: float = 0.5  # and down to floor x target


@dataclass(frozen=True, slots=True)
class RegionDemand:
    region: str
    utc_offset_h: float
    replicas: float  # replicas its demand needs at the target utilisation
    residency: str | None = None


@dataclass(frozen=True, slots=True)
class PlaneCapacity:
    name: str
    utc_offset_h: float
    serving: bool
    capacity: int  # most replicas it can run (its own cap and its pools' supply)
    usd_per_replica_hour: float  # its cheapest pool with room
    residency: frozenset[str] = frozenset()
    min_replicas: int = 0


@dataclass(frozen=True, slots=True)
class PlacementSnapshot:
    demand: tuple[RegionDemand, ...]
    planes: tuple[PlaneCapacity, ...]


@dataclass(frozen=True, slots=True)
class Assignment:
    region: str
    plane: str
    replicas: float
    latency_ms: float
    reason_code: str  # nearest, cheaper, spilled


@dataclass(frozen=True, slots=True)
class PlaneTarget:
    plane: str
    target: int
    min_replicas: int
    max_replicas: int
    reason_code: str  # assigned, full, idle, not_serving
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    planes: tuple[PlaneTarget, ...]
    assignments: tuple[Assignment, ...]
    unplaced: tuple[tuple[str, float], ...]  # (region, replicas) nothing could take
    reason_code: str  # placed, spilled, unplaced
    reason: str

    def target(self, plane: str) -> PlaneTarget:
        for t in self.planes:
            if t.plane == plane:
                return t
        raise KeyError(f"no plane {plane!r} in the placement")


def _order(
    config: PlacementConfig, region: RegionDemand, planes: list[PlaneCapacity]
) -> list[PlaneCapacity]:
    """Eligible planes, best first: nearest, the cheaper among those within the slack."""
    away = {
        p.name: latency_ms(region.utc_offset_h, p.utc_offset_h, config.ms_per_time_zone)
        for p in planes
    }
    nearest = min(away.values()) if away else 0.0

    def key(p: PlaneCapacity) -> tuple[float, float, float, str]:
        close = away[p.name] <= nearest + config.latency_slack_ms
        band = nearest if close else away[p.name]
        return (band, p.usd_per_replica_hour if close else 0.0, away[p.name], p.name)

    return sorted(planes, key=key)


def decide(config: PlacementConfig, snapshot: PlacementSnapshot) -> PlacementDecision:
    room = {p.name: float(p.capacity) for p in snapshot.planes if p.serving}
    assigned = {p.name: 0.0 for p in snapshot.planes}
    assignments: list[Assignment] = []
    unplaced: list[tuple[str, float]] = []
    regions = sorted(snapshot.demand, key=lambda r: (r.residency is None, -r.replicas, r.region))
    for r in regions:
        if r.replicas <= 0:
            continue
        eligible = [
            p
            for p in snapshot.planes
            if p.serving and (r.residency is None or r.residency in p.residency)
        ]
        left = r.replicas
        ordered = _order(config, r, eligible)
        nearest = min(
            (latency_ms(r.utc_offset_h, p.utc_offset_h, config.ms_per_time_zone) for p in eligible),
            default=0.0,
        )
        for i, p in enumerate(ordered):
            if left <= 1e-9:
                break
            take = min(left, room[p.name])
            if take <= 1e-9:
                continue
            room[p.name] -= take
            assigned[p.name] += take
            left -= take
            lat = latency_ms(r.utc_offset_h, p.utc_offset_h, config.ms_per_time_zone)
            # past the first in the order, every plane before it is full
            code = "spilled" if i > 0 else "nearest" if lat <= nearest + 1e-9 else "cheaper"
            assignments.append(Assignment(r.region, p.name, take, lat, code))
        if left > 1e-9:
            unplaced.append((r.region, left))

    targets = []
    for p in snapshot.planes:
        if not p.serving:
            floor = min(p.min_replicas, p.capacity)
            targets.append(
                PlaneTarget(
                    p.name,
                    floor,
                    floor,
                    floor,
                    "not_serving",
                    f"{p.name} is not serving: kept at its floor of {floor}",
                )
            )
            continue
        target = min(max(math.ceil(assigned[p.name] - 1e-9), p.min_replicas), p.capacity)
        low = min(max(math.floor(target * config.floor), p.min_replicas), p.capacity)
        high = min(max(math.ceil(target * config.headroom) + 1, low), p.capacity)
        if assigned[p.name] > 0 and room[p.name] <= 1e-9:
            # Filled to what it can supply: demand spills past it, so the plane never sees
            # all of it and its own autoscaler would undershoot; hold it at its capacity.
            targets.append(
                PlaneTarget(
                    p.name,
                    target,
                    target,
                    target,
                    "full",
                    f"{p.name}: {assigned[p.name]:.1f} replicas of demand fill its capacity "
                    f"{p.capacity}; held there (the rest spills)",
                )
            )
            continue
        if assigned[p.name] > 0:
            code = "assigned"
            why = (
                f"{p.name}: {assigned[p.name]:.1f} replicas of demand assigned -> target "
                f"{target}, autoscaler bounds {low}..{high}"
            )
        else:
            code = "idle"
            why = f"{p.name}: no demand assigned; kept at {target} (bounds {low}..{high})"
        targets.append(PlaneTarget(p.name, target, low, high, code, why))

    spilled = [a for a in assignments if a.reason_code == "spilled"]
    if unplaced:
        code = "unplaced"
        why = "no serving plane can take: " + ", ".join(
            f"{name} {n:.1f} replicas" for name, n in unplaced
        )
    elif spilled:
        code = "spilled"
        why = "capacity ran out; spilled: " + ", ".join(
            f"{a.region}->{a.plane} {a.replicas:.1f}" for a in spilled
        )
    else:
        code = "placed"
        why = "every region's demand placed on its nearest (or cheaper close) plane"
    return PlacementDecision(tuple(targets), tuple(assignments), tuple(unplaced), code, why)
