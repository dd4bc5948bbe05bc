"""Live placement: the demand of each client region, placed on the planes of a live fleet.

``DemandMeter`` counts, per client region (where the client is on the clock, and the residency
tag its requests must stay within), the request-seconds the front door had open since the last
placement: finished requests, and the part of those still open. Request-seconds over the
window is the region's mean concurrency (Little's law); in replicas that is concurrency over
what one replica should carry (its ``queueing.max_concurrency`` x
``control_plane.target_utilization``).

``LivePlacement`` is the driver of ``policy.placement.decide``: every
``control_plane.placement_interval_s`` it builds the snapshot (each region's demand, each
plane's capacity from its config: ``max_replicas`` and its pools' supply, the price of its
cheapest pool, whether failover has it serving), asks the policy, counts, logs and keeps the
decision for ``/shipit/fleet``, and sets each plane's bounds on its gateway's autoscalers
(``POST /shipit/scaling/{deployment}``), only where they changed or the last call failed.
A live plane is kept at one replica or more: with none its probes fail and failover takes it
out. It decides nothing itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.config.fleet import FleetConfig, PlaneConfig
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.policy import placement
from shipit.policy.placement import PlacementDecision, PlacementSnapshot
from shipit.services.front_door_views import ClientPlace
from shipit.services.upstream import Upstream, UpstreamError

log = logging.getLogger("shipit.front_door")
HISTORY = 50  # placement decisions kept for /shipit/fleet
LIVE_FLOOR = 1  # a live plane with no ready replica fails its probes

RegionKey = tuple[float, str | None]  # (utc_offset_h, residency)


def region_name(key: RegionKey) -> str:
    """``UTC-5``, or ``UTC+1/eu`` for a region pinned to a residency tag."""
    offset, residency = key
    return f"UTC{offset:+g}" + (f"/{residency}" if residency else "")


class DemandMeter:
    """Request-seconds per client region since the last ``take``; no clock of its own."""

    def __init__(self, now_s: float) -> None:
        self.window_start_s = now_s
        self.busy_s: dict[RegionKey, float] = {}
        self.seen: dict[RegionKey, None] = {}  # every region that ever sent, in order
        self._open: dict[int, tuple[RegionKey, float]] = {}
        self._ids = itertools.count()

    def opened(self, place: ClientPlace, now_s: float) -> int:
        key = (place.utc_offset_h, place.residency)
        self.seen.setdefault(key, None)
        token = next(self._ids)
        self._open[token] = (key, now_s)
        return token

    def closed(self, token: int, now_s: float) -> None:
        found = self._open.pop(token, None)
        if found is not None:
            key, started = found
            self.busy_s[key] = self.busy_s.get(key, 0.0) + max(
                now_s - max(started, self.window_start_s), 0.0
            )

    def take(self, now_s: float) -> dict[RegionKey, float]:
        """Each region's mean concurrency over the window; starts the next window."""
        span = now_s - self.window_start_s
        busy = dict(self.busy_s)
        for key, started in self._open.values():
            busy[key] = busy.get(key, 0.0) + max(now_s - max(started, self.window_start_s), 0.0)
        self.busy_s.clear()
        self.window_start_s = now_s
        if span <= 0:
            return dict.fromkeys(self.seen, 0.0)
        return {key: busy.get(key, 0.0) / span for key in self.seen}


def plane_capacity(plane: PlaneConfig) -> int:
    """The most replicas the plane can run: its own cap and its pools' supply."""
    pools = [p for p in (plane.pools.reserved, plane.pools.on_demand, plane.pools.spot) if p]
    if any(p.max_replicas is None for p in pools):
        return plane.max_replicas
    return min(plane.max_replicas, sum(p.max_replicas or 0 for p in pools))


def cheapest_usd_per_replica_hour(plane: PlaneConfig, gpus_per_replica: int) -> float:
    pools = [p for p in (plane.pools.reserved, plane.pools.on_demand, plane.pools.spot) if p]
    return min((p.usd_per_gpu_hour for p in pools), default=0.0) * gpus_per_replica


@dataclass(frozen=True, slots=True)
class PlaneEndpoint:
    """Where a plane's autoscalers are reached: its gateway and its deployments' slots."""

    name: str
    url: str
    max_concurrency: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Applied:
    bounds: tuple[int, int] | None = None  # last set on the plane, None: never or failed
    detail: str = ""
    at_s: float | None = None


class LivePlacement:
    def __init__(
        self,
        fleet: FleetConfig,
        planes: Sequence[PlaneEndpoint],
        *,
        now: Callable[[], float],
        decisions: DecisionLog = NO_LOG,
        on_decision: Callable[[PlacementDecision], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.planes = {p.name: p for p in planes}
        self.now = now
        self.decisions = decisions
        self.on_decision = on_decision
        cp = fleet.control_plane
        self.interval_s = cp.placement_interval_s
        self.target_utilization = cp.target_utilization
        self.config = placement.PlacementConfig(ms_per_time_zone=fleet.ms_per_time_zone)
        slots = [n for p in planes for n in p.max_concurrency.values()]
        self.slots_per_replica = max(slots, default=8)
        self.meter = DemandMeter(now())
        self.last: PlacementDecision | None = None
        self.last_demand: dict[str, float] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.counts: Counter[str] = Counter()
        self.applied = {p.name: _Applied() for p in planes}

    # ----- demand ------------------------------------------------------------------------
    def opened(self, place: ClientPlace) -> int:
        return self.meter.opened(place, self.now())

    def closed(self, token: int) -> None:
        self.meter.closed(token, self.now())

    # ----- one placement -----------------------------------------------------------------
    def snapshot(self, serving: Sequence[str]) -> PlacementSnapshot:
        per_replica = self.slots_per_replica * self.target_utilization
        concurrency = self.meter.take(self.now())
        demand = tuple(
            placement.RegionDemand(region_name(key), key[0], c / per_replica, key[1])
            for key, c in concurrency.items()
        )
        gpus = self.fleet.gpus_per_replica
        planes = tuple(
            placement.PlaneCapacity(
                p.name,
                p.utc_offset_h,
                p.name in serving,
                max(plane_capacity(p), LIVE_FLOOR),
                cheapest_usd_per_replica_hour(p, gpus),
                frozenset(p.residency),
                max(p.min_replicas, LIVE_FLOOR),
            )
            for p in self.fleet.planes
            if p.name in self.planes
        )
        return PlacementSnapshot(demand, planes)

    def decide(self, serving: Sequence[str]) -> PlacementDecision:
        snapshot = self.snapshot(serving)
        decision = placement.decide(self.config, snapshot)
        self.decisions.record("placement", "fleet", snapshot, None, decision)
        self.last = decision
        self.last_demand = {d.region: round(d.replicas, 3) for d in snapshot.demand}
        self.counts[decision.reason_code] += 1
        self.history.append(
            {
                "at_s": round(self.now(), 3),
                "reason_code": decision.reason_code,
                "reason": decision.reason,
                "demand_replicas": dict(self.last_demand),
                "planes": {
                    t.plane: {
                        "target": t.target,
                        "min_replicas": t.min_replicas,
                        "max_replicas": t.max_replicas,
                        "reason_code": t.reason_code,
                    }
                    for t in decision.planes
                },
            }
        )
        log.info("placement %s: %s", decision.reason_code, decision.reason)
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision

    async def apply(self, decision: PlacementDecision, upstream: Upstream) -> None:
        """Each plane's bounds onto each of its deployments' autoscalers, where they changed."""

        async def one(t: placement.PlaneTarget) -> None:
            plane = self.planes[t.plane]
            low, high = t.min_replicas, max(t.max_replicas, t.min_replicas, 1)
            state = self.applied[t.plane]
            if state.bounds == (low, high):
                return
            payload = {"min_replicas": low, "max_replicas": high, "reason": t.reason}
            errors = []
            for deployment in plane.max_concurrency:
                url = f"{plane.url}/shipit/scaling/{deployment}"
                try:
                    status, body = await upstream.post_json(url, payload, timeout_s=5.0)
                except UpstreamError as exc:
                    errors.append(f"{deployment}: {exc.message}")
                    continue
                if status != 200:
                    errors.append(
                        f"{deployment}: HTTP {status} {body[:200].decode(errors='replace')}"
                    )
            state.at_s = self.now()
            if errors:
                state.bounds, state.detail = None, "; ".join(errors)
                log.warning(
                    "placement: bounds %d..%d not set on %s: %s", low, high, t.plane, state.detail
                )
            else:
                state.bounds, state.detail = (low, high), t.reason
                log.info("placement: %s bounds %d..%d (%s)", t.plane, low, high, t.reason)

        await asyncio.gather(*(one(t) for t in decision.planes if t.plane in self.planes))

    # ----- views -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "interval_s": self.interval_s,
            "target_utilization": self.target_utilization,
            "slots_per_replica": self.slots_per_replica,
            "reason_code": last.reason_code if last else None,
            "reason": last.reason if last else None,
            "demand_replicas": dict(self.last_demand),
            "planes": [
                {
                    "plane": t.plane,
                    "target": t.target,
                    "min_replicas": t.min_replicas,
                    "max_replicas": t.max_replicas,
                    "reason_code": t.reason_code,
                    "reason": t.reason,
                    "applied": None
                    if (a := self.applied.get(t.plane)) is None or a.bounds is None
                    else list(a.bounds),
                    "apply_detail": a.detail if a else "",
                }
                for t in (last.planes if last else ())
            ],
            "assignments": [
                {
                    "region": a.region,
                    "plane": a.plane,
                    "replicas": round(a.replicas, 3),
                    "latency_ms": a.latency_ms,
                    "reason_code": a.reason_code,
                }
                for a in (last.assignments if last else ())
            ],
            "history": list(self.history),
            "counts": dict(sorted(self.counts.items())),
        }
