"""The global front door's driver: probes every plane's gateway, applies failover, routes requests.

``FrontDoor`` holds one ``PlaneTarget`` per plane of a live fleet (its gateway's URL, place on
the clock, residency, role and each deployment's ``max_concurrency``). Every
``probe_interval_s`` it asks each plane's gateway for ``/shipit/status`` (``/health`` when the
status needs a key), reads its ready replicas, slots, in-flight and queued requests
(``front_door_views.plane_load``), and feeds one round of probes to ``policy.failover.decide``;
each change (a plane out, back, a standby promoted) is counted, logged and kept for
``/shipit/fleet``. ``route`` asks ``policy.global_routing.decide`` for the plane of one request
from the client's place, the planes serving now and their load (corrected by the requests the
front door opened on each since its last probe). The HTTP side (``gateway.front_door``) relays
the request and calls ``opened``/``closed``/``served``, and ``demand_opened``/``demand_closed``
around each request, which ``services.placement_live`` counts per client region; every
``control_plane.placement_interval_s`` (and when failover changes the serving planes) it places
that demand on the planes and sets each plane's autoscaler bounds. It must not relay bytes
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shipit.config.fleet import FleetConfig
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.policy import failover, global_routing
from shipit.policy.failover import (
    FailoverDecision,
    FailoverPolicyConfig,
    FailoverSnapshot,
    PlaneProbe,
    PlaneRole,
    Posture,
)
from shipit.policy.global_routing import GlobalRouteDecision, GlobalRouteSnapshot
from shipit.services.front_door_views import (
    ClientPlace,
    PlaneLoad,
    PlanePoolsView,
    fleet_pools,
    plane_load,
    plane_pools,
    plane_view,
)
from shipit.services.placement_live import LivePlacement, PlaneEndpoint
from shipit.services.upstream import AiohttpUpstream, Upstream, UpstreamError
from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import build_front_door_metrics, snapshot_family

log = logging.getLogger("shipit.front_door")
HISTORY = 100  # failover changes and route decisions kept for /shipit/fleet


@dataclass(frozen=True, slots=True)
class PlaneTarget:
    """One plane as the front door reaches it."""

    name: str
    url: str  # its gateway, http://host:port
    utc_offset_h: float
    role: str = "active"
    residency: frozenset[str] = frozenset()
    max_concurrency: Mapping[str, int] = field(default_factory=dict)  # per deployment


@dataclass(slots=True)
class _Live:
    target: PlaneTarget
    load: PlaneLoad = field(default_factory=PlaneLoad)
    open: int = 0  # requests the front door has open on it now
    open_at_probe: int = 0
    probe_ok: bool | None = None
    probe_detail: str = ""
    probed_at_s: float | None = None
    served: int = 0  # answers that started from it
    pools: PlanePoolsView | None = None  # its capacity pools, as last probed


class _Serving(Collector):
    def __init__(self, door: FrontDoor) -> None:
        self.door = door

    def collect(self) -> list[Metric]:
        serving = set(self.door.state.serving)
        samples = [((name,), 1.0 if name in serving else 0.0) for name in self.door.planes]
        return [snapshot_family(cat.FRONT_DOOR_PLANE_SERVING, samples)]


class _Placement(Collector):
    def __init__(self, door: FrontDoor) -> None:
        self.door = door

    def collect(self) -> list[Metric]:
        p = self.door.placement
        bounds = [
            ((t.plane, bound), float(value))
            for t in (p.last.planes if p.last else ())
            for bound, value in (
                ("target", t.target),
                ("min", t.min_replicas),
                ("max", t.max_replicas),
            )
        ]
        demand = [((region,), n) for region, n in p.last_demand.items()]
        return [
            snapshot_family(cat.FRONT_DOOR_PLANE_BOUNDS, bounds),
            snapshot_family(cat.FRONT_DOOR_REGION_DEMAND, demand),
        ]


class FrontDoor:
    def __init__(
        self,
        fleet: FleetConfig,
        targets: Sequence[PlaneTarget],
        *,
        default_offset_h: float,
        now: Callable[[], float] = time.time,
        upstream: Callable[[], Upstream] | None = None,
        first_byte_timeout_s: float = 300.0,
        decisions: DecisionLog = NO_LOG,
        control_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.fleet = fleet
        self.planes = {t.name: _Live(t) for t in targets}
        self.default_offset_h = default_offset_h
        self.places = tuple((t.name, t.utc_offset_h) for t in targets)
        self.now = now
        self.first_byte_timeout_s = first_byte_timeout_s
        self.decisions = decisions
        fo = fleet.failover
        self.interval_s = fo.probe_interval_s
        self.probe_timeout_s = min(max(fo.probe_interval_s, 0.5), 5.0)
        self.routing = global_routing.GlobalRoutingConfig(ms_per_time_zone=fleet.ms_per_time_zone)
        posture = Posture(fleet.posture)
        self.failover = FailoverPolicyConfig(posture, fo.fail_after, fo.recover_after)
        self.state = failover.initial_state([(t.name, PlaneRole(t.role)) for t in targets])
        self.last_failover: FailoverDecision | None = None
        self.changes: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.routes: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.route_counts: Counter[tuple[str, str]] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = build_front_door_metrics(self.registry)
        self.registry.register(_Serving(self))
        self.placement = LivePlacement(
            fleet,
            [PlaneEndpoint(t.name, t.url, dict(t.max_concurrency)) for t in targets],
            now=now,
            decisions=decisions,
            on_decision=lambda d: self.metrics.placements.labels(d.reason_code).inc(),
        )
        self.registry.register(_Placement(self))
        # Control calls (probes, bounds) carry the planes' admin key when they need one.
        headers = dict(control_headers or {})
        self._make_upstream = upstream or (
            lambda: AiohttpUpstream(read_timeout_s=300.0, control_headers=headers)
        )
        self._upstream: Upstream | None = None
        self._task: asyncio.Task[None] | None = None
        self._placing: asyncio.Task[None] | None = None
        self._place_now = asyncio.Event()
        self.started_at_s = now()

    # ----- lifecycle --------------------------------------------------------------------------
    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the front door is not started (start() builds its client)")
        return self._upstream

    async def start(self) -> None:
        """The client, then the probe loop (the first round runs before this returns)."""
        self._upstream = self._make_upstream()
        await self.probe_round()
        self._task = asyncio.create_task(self._probe_loop(), name="front-door-probes")
        self._placing = asyncio.create_task(self._placement_loop(), name="front-door-placement")

    async def stop(self) -> None:
        for task in (self._task, self._placing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._placing = None
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            next_at = max(next_at + self.interval_s, loop.time())
            try:
                await self.probe_round()
            except Exception:  # a bug here must not stop failover for good
                log.exception("front door probe round failed")

    async def _placement_loop(self) -> None:
        """A placement every interval (the first once a whole interval of demand is measured),
        and at once when failover changes the serving planes."""
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that comes
            # as the event is set, and the loop would outlive stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.placement.interval_s):
                    await self._place_now.wait()
            self._place_now.clear()
            try:
                await self.place()
            except Exception:  # a bug here must not stop placement for good
                log.exception("front door placement failed")

    async def place(self) -> None:
        """One placement: decide from the demand measured since the last one, then apply."""
        decision = self.placement.decide(self.state.serving)
        await self.placement.apply(decision, self.upstream)

    def demand_opened(self, place: ClientPlace) -> int:
        return self.placement.opened(place)

    def demand_closed(self, token: int) -> None:
        self.placement.closed(token)

    # ----- probes and failover ----------------------------------------------------------------
    async def probe_round(self) -> FailoverDecision:
        probes = await asyncio.gather(*(self._probe(p) for p in self.planes.values()))
        snapshot = FailoverSnapshot(self.now(), tuple(probes))
        before = self.state
        decision, self.state = failover.decide(self.failover, snapshot, before)
        self.last_failover = decision
        for c in decision.changes:
            self.metrics.failovers.labels(c.plane, c.reason_code).inc()
            self.changes.append(
                {
                    "at_s": round(snapshot.now_s, 3),
                    "plane": c.plane,
                    "change": c.reason_code,
                    "reason": c.reason,
                    "serving": list(decision.serving),
                }
            )
            log.warning("plane %s %s: %s", c.plane, c.reason_code, c.reason)
        if decision.changes:
            self.decisions.record("failover", "fleet", snapshot, before, decision)
            if self._placing is not None:  # the serving planes changed: place the demand again
                self._place_now.set()
        return decision

    async def _probe(self, live: _Live) -> PlaneProbe:
        name, url = live.target.name, live.target.url
        ok, detail = False, ""
        try:
            status, body = await self.upstream.get(
                url + "/shipit/status", timeout_s=self.probe_timeout_s
            )
            if status in (401, 403):  # the status needs a key there: readiness only
                status, body = await self.upstream.get(
                    url + "/health", timeout_s=self.probe_timeout_s
                )
                ready = int(json.loads(body).get("ready_replicas", 0)) if status == 200 else 0
                per = max(live.target.max_concurrency.values(), default=8)
                load = PlaneLoad(ready, ready * per)
            elif status == 200:
                got = json.loads(body)
                load = plane_load(got, live.target.max_concurrency)
                live.pools = plane_pools(got)
            else:
                load, detail = PlaneLoad(), f"HTTP {status}"
            ok = load.ready_replicas > 0
            if not ok and not detail:
                detail = "no ready replica"
            live.load = load
        except UpstreamError as exc:
            detail = f"{exc.kind}: {exc.message}"
        except (ValueError, AttributeError, TypeError) as exc:  # not the status JSON
            detail = f"unreadable status: {exc}"
        live.probe_ok, live.probe_detail, live.probed_at_s = ok, detail, self.now()
        live.open_at_probe = live.open
        return PlaneProbe(name, ok, detail)

    # ----- routing ----------------------------------------------------------------------------
    def route(self, place: ClientPlace, tried: frozenset[str] = frozenset()) -> GlobalRouteDecision:
        serving = set(self.state.serving)
        views = tuple(
            plane_view(
                name,
                p.target.utc_offset_h,
                p.target.residency,
                serving=name in serving,
                load=p.load,
                opened_since_probe=p.open - p.open_at_probe,
            )
            for name, p in self.planes.items()
        )
        snapshot = GlobalRouteSnapshot(place.utc_offset_h, views, place.residency, tried)
        decision = global_routing.decide(self.routing, snapshot)
        self.route_counts[(decision.plane or "none", decision.reason_code)] += 1
        self.routes.append(
            {
                "at_s": round(self.now(), 3),
                "client_utc_offset_h": place.utc_offset_h,
                "from": place.source,
                "residency": place.residency,
                "tried": sorted(tried),
                "plane": decision.plane,
                "reason_code": decision.reason_code,
                "reason": decision.reason,
            }
        )
        return decision

    def url(self, plane: str) -> str:
        return self.planes[plane].target.url

    def opened(self, plane: str) -> None:
        self.planes[plane].open += 1

    def closed(self, plane: str) -> None:
        self.planes[plane].open -= 1

    def served(self, plane: str) -> None:
        self.planes[plane].served += 1

    # ----- views ------------------------------------------------------------------------------
    def serving(self) -> tuple[str, ...]:
        return self.state.serving

    def render_metrics(self) -> bytes:
        return generate_latest(self.registry)

    def status(self) -> dict[str, Any]:
        """``/shipit/fleet``: the posture, every plane, the last failover decision, the failover
        changes and the latest route decisions (newest last), and counts by plane and reason."""
        planes = []
        for name, p in self.planes.items():
            st = self.state.status(name)
            planes.append(
                {
                    "name": name,
                    "url": p.target.url,
                    "utc_offset_h": p.target.utc_offset_h,
                    "residency": sorted(p.target.residency),
                    "configured_role": p.target.role,
                    "role": st.role.value,
                    "up": st.up,
                    "serving": name in self.state.serving,
                    "promoted": st.promoted,
                    "failed_probes": st.failures,
                    "ok_probes": st.successes,
                    "since_s": round(st.since_s, 3),
                    "last_probe": {
                        "ok": p.probe_ok,
                        "detail": p.probe_detail,
                        "at_s": None if p.probed_at_s is None else round(p.probed_at_s, 3),
                    },
                    "ready_replicas": p.load.ready_replicas,
                    "slots": p.load.slots,
                    "in_flight": p.load.in_flight,
                    "queued": p.load.queued,
                    "open_from_front_door": p.open,
                    "served": p.served,
                    "replicas_by_pool": None if p.pools is None else dict(p.pools.replicas_by_pool),
                }
            )
        last = self.last_failover
        return {
            "posture": self.fleet.posture,
            "started_at_s": round(self.started_at_s, 3),
            "default_client_utc_offset_h": self.default_offset_h,
            "probe_interval_s": self.interval_s,
            "fail_after": self.failover.fail_after,
            "recover_after": self.failover.recover_after,
            "serving": list(self.state.serving),
            "planes": planes,
            "failover": None
            if last is None
            else {"reason_code": last.reason_code, "reason": last.reason},
            "changes": list(self.changes),
            "routes": list(self.routes),
            "route_counts": {f"{p}/{r}": n for (p, r), n in sorted(self.route_counts.items())},
            "placement": self.placement.status(),
            "pools": fleet_pools(
                {name: p.pools for name, p in self.planes.items()}, self.fleet.gpus_per_replica
            ),
        }
