"""One tick of traffic in the fleet simulator: arrivals, global routing, each plane's queue.

Each client region's arrivals in the tick are one Poisson draw, routed as a batch: global
routing picks a plane for it (``policy.global_routing.decide`` with every plane's free slots
as its gateway would report them), the plane takes what its free slots serve in the tick
(``free x tick / service time`` requests), and the rest goes round again with that plane now
full, so a batch spills the way single requests would. A plane counts as having free slots
while the load sent to it this tick (the requests it is sent times the service time, over the
tick) plus its backlog stays under ``slots - 1.5 sqrt(slots)``: the square-root staffing rule,
past which an arriving request finds every slot busy often (the chance is about 5-10%). A
plane that is down but not yet known to be (its probes have not failed enough) fails what it
is sent; so does the share of a
plane's slots on GPUs that died and were not detected yet. Then each plane's queue
(``sim.fleet_model.queue_tick``) scores every (region, plane) chunk against the TTFT SLO with
that pair's network latency.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shipit.core.fleet import ReplicaState
from shipit.policy import global_routing as gr
from shipit.sim.fleet_model import queue_tick
from shipit.sim.fleet_replicas import POOLS, pool_config

if TYPE_CHECKING:
    from shipit.sim.regions import FleetSim

_READY = ReplicaState.READY


def _room(slots: int) -> float:
    """The load a plane takes before its gateway reads as full: the square-root staffing
    rule, ``slots - 1.5 sqrt(slots)`` (above it arrivals find every slot busy too often)."""
    return slots - 1.5 * math.sqrt(slots)


def route_tick(sim: FleetSim, now: float, dt: float) -> None:
    if dt <= 0:
        return
    svc, tally = sim.s.service, sim.tally
    service_s = svc.service_s
    conc = svc.concurrency
    rates = sim.s.demand.region_rps(now)
    counts = sim.np_rng.poisson([r * dt for r in rates])
    planes = sim.planes
    room = {n: _room(p.count(_READY) * conc) - p.backlog for n, p in planes.items()}
    static = {
        n: (
            p.cfg.utc_offset_h,
            n in sim.serving,
            frozenset(p.cfg.residency),
            p.count(_READY) * conc,
        )
        for n, p in planes.items()
    }
    chunks: dict[str, list[tuple[int, float, float]]] = {n: [] for n in planes}
    for i, reg in enumerate(sim.regions):
        left = float(counts[i])
        if left <= 0:
            continue
        sim.region_arrivals[i] += left
        tally.requests[i] += left
        sim.win_req[i] += left
        for _ in range(len(planes) + 1):
            views = tuple(
                gr.PlaneView(
                    n,
                    off,
                    serving,
                    max(int(room[n]), 0),
                    queued=round(planes[n].backlog),
                    slots=slots,
                    residency=res,
                )
                for n, (off, serving, res, slots) in static.items()
            )
            d = gr.decide(
                sim.route_config,
                gr.GlobalRouteSnapshot(reg.utc_offset_h, views, residency=reg.residency),
            )
            tally.decisions += 1
            if d.plane is None:
                tally.unrouted += left
                tally.routed["no_plane"] += left
                left = 0.0
                break
            take = left
            if d.reason_code in ("nearest", "spilled"):
                take = min(left, max(1.0, math.ceil(room[d.plane] * dt / service_s)))
            tally.routed[d.reason_code] += take
            tally.routed_to[f"{reg.name}->{d.plane}"] += take
            room[d.plane] -= take * service_s / dt
            chunks[d.plane].append((i, take, d.latency_ms))
            left -= take
            if left <= 0:
                break
        if left > 0:  # every round spilled; what is left waits at the last choice
            tally.unrouted += left
    budget0 = sim.s.ttft_slo_s - svc.prefill_s
    for name, p in planes.items():
        mine = chunks[name]
        sent = sum(c[1] for c in mine)
        if p.down:
            tally.failed += sent
            continue
        ready = p.count(_READY)
        alive = 1.0 - (p.dead_ready / ready if ready else 0.0)
        tally.failed += sent * (1.0 - alive)
        q, p.backlog, p.busy = queue_tick(
            slots=p.serving_slots,
            arrivals=sent * alive,
            backlog=p.backlog,
            service_s=service_s,
            dt=dt,
            queue_timeout_s=sim.sim.queue_timeout_s,
        )
        tally.dropped += q.dropped
        p.arrivals += round(sent)
        p.completed_f += q.completed
        p.completed = int(p.completed_f)
        p.service_total_s += q.completed * service_s
        tally.tokens += q.completed * svc.tokens_per_request
        for i, n, lat_ms in mine:
            met = n * alive * q.met_fraction(budget0 - lat_ms / 1000.0)
            tally.met[i] += met
            sim.win_met[i] += met


def sample(sim: FleetSim, now: float) -> None:
    """One row of the time series; the SLO figures are over the window since the last row."""
    tally = sim.tally
    row: dict[str, Any] = {"t_h": round(now / 3600.0, 4)}
    req, met = sum(sim.win_req), sum(sim.win_met)
    row["slo_attainment"] = round(met / req, 5) if req else None
    for i, reg in enumerate(sim.regions):
        r = sim.win_req[i]
        row[f"slo:{reg.name}"] = round(sim.win_met[i] / r, 5) if r else None
    row["usd_per_hour"] = round(sum(p.usd_per_hour() for p in sim.planes.values()), 2)
    for name, p in sim.planes.items():
        for pool in POOLS:
            if pool_config(p.cfg, pool) is not None:
                row[f"replicas:{name}:{pool.value}"] = p.holding(pool)
        row[f"ready:{name}"] = p.count(_READY) - p.dead_ready
        row[f"serving:{name}"] = name in sim.serving
    row["preemptions"] = tally.preemptions
    row["gpu_failures"] = tally.gpu_failures
    row["recoveries"] = tally.recoveries
    tally.sample(row)
    sim.win_req = [0.0] * len(sim.regions)
    sim.win_met = [0.0] * len(sim.regions)
