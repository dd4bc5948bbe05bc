"""One tick of traffic in the fleet simulator: arrivals, global routing, each plane's queue.

The live front door routes each request on its own: the nearest serving plane with a free
slot, else the next nearest with one (spill-over), else, every plane full, where the queue
per slot is shortest (``policy.global_routing.decide``). The simulator routes a tick's
arrivals as fractions with the same decisions:

- **the front door's choices.** For each client region, ``decide`` is asked with every plane
  free, then with the plane it chose marked full, and so on: the chain of planes a request
  tries, nearest first, ending where it queues when all it may use are full (``all_full``,
  or ``queued_nearest`` past ``max_spill_ms``), or with no plane at all. What queues with every
  plane full is handed out in slices of an eighth (a request at least), each asked of
  ``decide`` with the planes' queues as they would stand at the tick's end, each slice
  counted in: the shortest queue per slot fills first, as request by request, instead of
  a whole tick herding onto the plane whose queue was shortest at its start.
- **how often a plane is full.** A request finds a plane full (every slot busy) with the
  plane's Erlang C probability ``C(slots, a)`` at the load ``a`` it carries (requests/s x
  service time), 1 while it has a backlog or is overloaded. Planes are taken to be full
  independently, so a region's requests go ``1 - C1`` to its first choice, ``C1 (1 - C2)``
  to the second, and what is left queues at the chain's end. The loads depend on the split
  and the split on the loads: the two are solved together (plane by plane by bisection, a
  few sweeps over the planes).
- **the wait.** A request that found a free slot starts at once; one that queued waits
  ``P(wait > t | wait > 0) = exp(-decay t)`` of its plane's queue (``sim.fleet_model``), so a
  single plane's arrivals wait exactly as Erlang C with Allen-Cunneen says. A plane with a
  backlog or offered more than its slots serve is a fluid queue, and every request sent
  there waits the backlog's wait.

A plane that is down but not yet known to be (its probes have not failed enough) still looks
free and fails what it is sent; so does the share of a plane's slots on GPUs that died and
were not detected yet. Each (region, plane) chunk is scored against the TTFT SLO with that
pair's network latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipit.core.fleet import ReplicaState
from shipit.policy import global_routing as gr
from shipit.sim.fleet_model import queue_tick, wait_probability
from shipit.sim.fleet_replicas import POOLS, pool_config

if TYPE_CHECKING:
    from shipit.sim.regions import FleetSim

_READY = ReplicaState.READY
_SWEEPS = 6  # over the planes, solving the load/split fixed point
_BISECTIONS = 14  # to 1e-4
_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class RouteStep:
    """One plane a request tries: it takes the request when it has a free slot; the last step
    (``queues``) takes what is left, to wait there (``plane`` None: no plane can)."""

    plane: str | None
    latency_ms: float
    reason_code: str
    queues: bool


def route_chain(
    config: gr.GlobalRoutingConfig,
    client: tuple[float, str | None],
    planes: Mapping[str, tuple[float, bool, frozenset[str], int, int]],
    full: frozenset[str] = frozenset(),
) -> tuple[tuple[RouteStep, ...], int]:
    """The planes a request of a client at ``client`` (UTC offset, residency) tries, in order,
    as ``policy.global_routing.decide`` picks them; ``planes`` maps each name to (UTC offset,
    serving, residency tags, slots, queued); ``full`` are known to have no free slot. Returns
    the steps and the number of decisions taken."""
    full_now = set(full)
    steps: list[RouteStep] = []
    for n in range(1, len(planes) + 2):
        views = tuple(
            gr.PlaneView(
                name,
                off,
                serving,
                0 if name in full_now else max(slots, 1),
                queued=queued,
                slots=slots,
                residency=res,
            )
            for name, (off, serving, res, slots, queued) in planes.items()
        )
        d = gr.decide(config, gr.GlobalRouteSnapshot(client[0], views, residency=client[1]))
        if d.plane is not None and d.reason_code in ("nearest", "spilled"):
            steps.append(RouteStep(d.plane, d.latency_ms, d.reason_code, False))
            full_now.add(d.plane)
            continue
        steps.append(RouteStep(d.plane, d.latency_ms, d.reason_code, True))
        return tuple(steps), n
    raise AssertionError("global routing kept finding free planes")  # pragma: no cover


def split(
    steps: tuple[RouteStep, ...], p_full: Mapping[str, float]
) -> list[tuple[RouteStep, float]]:
    """Each step's share of a region's requests when plane ``x`` is full ``p_full[x]`` of the
    time, independently of the others."""
    out, left = [], 1.0
    for step in steps:
        if step.queues or step.plane is None:
            out.append((step, left))
            break
        pf = p_full[step.plane]
        out.append((step, left * (1.0 - pf)))
        left *= pf
    return out


def fill_all_full(
    config: gr.GlobalRoutingConfig,
    client: tuple[float, str | None],
    planes: Mapping[str, tuple[float, bool, frozenset[str], int, int]],
    queue: dict[str, float],
    amount: float,
) -> tuple[list[tuple[str, float, float]], int]:
    """Hand ``amount`` requests that found every plane full to ``decide`` in slices of an
    eighth (at least one request), ``queue`` (requests waiting per plane) growing by each
    slice. Returns (plane, latency_ms, requests) per slice and the decisions taken."""
    out: list[tuple[str, float, float]] = []
    piece, left, asked = max(amount / 8.0, 1.0), amount, 0
    while left > 1e-9:
        take = min(piece, left)
        views = tuple(
            gr.PlaneView(name, off, serving, 0, max(round(queue[name]), 0), slots, res)
            for name, (off, serving, res, slots, _) in planes.items()
        )
        d = gr.decide(config, gr.GlobalRouteSnapshot(client[0], views, residency=client[1]))
        asked += 1
        assert d.plane is not None  # the chain found this client a plane
        out.append((d.plane, d.latency_ms, take))
        queue[d.plane] += take
        left -= take
    return out, asked


def route_tick(sim: FleetSim, now: float, dt: float) -> None:
    if dt <= 0:
        return
    svc, tally = sim.s.service, sim.tally
    service_s = svc.service_s
    rates = sim.s.demand.region_rps(now)
    counts = [float(c) for c in sim.np_rng.poisson([r * dt for r in rates])]
    planes = sim.planes
    slots = {n: p.serving_slots for n, p in planes.items()}
    saturated = frozenset(
        n for n, p in planes.items() if not p.down and (p.backlog > 0 or slots[n] <= 0)
    )
    static = {
        n: (
            p.cfg.utc_offset_h,
            n in sim.serving,
            frozenset(p.cfg.residency),
            p.count(_READY) * svc.concurrency,
            round(p.backlog),
        )
        for n, p in planes.items()
    }
    chains: dict[int, tuple[RouteStep, ...]] = {}
    for i, reg in enumerate(sim.regions):
        if counts[i] <= 0:
            continue
        sim.region_arrivals[i] += counts[i]
        tally.requests[i] += counts[i]
        sim.win_req[i] += counts[i]
        chains[i], asked = route_chain(
            sim.route_config, (reg.utc_offset_h, reg.residency), static, saturated
        )
        tally.decisions += asked

    def full_at(load: Mapping[str, float]) -> dict[str, float]:
        return {
            n: 1.0 if n in saturated else 0.0 if p.down else wait_probability(slots[n], load[n])
            for n, p in planes.items()
        }

    def loads(p_full: Mapping[str, float]) -> dict[str, float]:
        sent = dict.fromkeys(planes, 0.0)
        for i, chain in chains.items():
            for step, share in split(chain, p_full):
                if step.plane is not None:
                    sent[step.plane] += counts[i] * share
        return {n: sent[n] / dt * service_s for n in planes}

    # Plane by plane, the others held, its chance of being full x against what x makes it:
    # the more it is full the more it sheds, so f(x) - x falls and bisection finds the one
    # root (to 1e-4); a few sweeps over the planes settle what they shed onto each other.
    p_full = {n: 1.0 if n in saturated else 0.0 for n in planes}
    free = [n for n, p in planes.items() if n not in saturated and not p.down]
    for _ in range(_SWEEPS):
        moved = 0.0
        for n in free:
            before, lo, hi = p_full[n], 0.0, 1.0
            p_full[n] = 0.0
            if wait_probability(slots[n], loads(p_full)[n]) > 0:  # else never full: 0
                for _ in range(_BISECTIONS):
                    p_full[n] = mid = 0.5 * (lo + hi)
                    if wait_probability(slots[n], loads(p_full)[n]) > mid:
                        lo = mid
                    else:
                        hi = mid
                p_full[n] = 0.5 * (lo + hi)
            moved = max(moved, abs(p_full[n] - before))
        if moved < _TOLERANCE:
            break

    chunks: dict[str, list[tuple[int, float, float, bool]]] = {n: [] for n in planes}
    herd: list[tuple[int, float]] = []  # (region, requests) that found every plane full
    for i, chain in chains.items():
        for step, share in split(chain, p_full):
            take = counts[i] * share
            if take <= 0:
                continue
            tally.routed[step.reason_code] += take
            if step.plane is None:
                tally.unrouted += take
            elif step.reason_code == "all_full":
                herd.append((i, take))
            else:
                tally.routed_to[f"{sim.regions[i].name}->{step.plane}"] += take
                chunks[step.plane].append((i, take, step.latency_ms, step.queues))
    if herd:  # the queues at the tick's end, before what is handed out below
        queue = {
            n: p.backlog + sum(c[1] for c in chunks[n]) - slots[n] / service_s * dt
            for n, p in planes.items()
        }
        for i, take in herd:
            reg = sim.regions[i]
            pieces, asked = fill_all_full(
                sim.route_config, (reg.utc_offset_h, reg.residency), static, queue, take
            )
            tally.decisions += asked
            for plane, lat_ms, got in pieces:
                tally.routed_to[f"{reg.name}->{plane}"] += got
                chunks[plane].append((i, got, lat_ms, True))
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
            slots=slots[name],
            arrivals=sent * alive,
            backlog=p.backlog,
            service_s=service_s,
            dt=dt,
            queue_timeout_s=sim.sim.queue_timeout_s,
            variability=svc.variability,
        )
        tally.dropped += q.dropped
        p.arrivals += round(sent)
        p.completed_f += q.completed
        p.completed = int(p.completed_f)
        p.service_total_s += q.completed * service_s
        tally.tokens += q.completed * svc.tokens_per_request
        for i, got, lat_ms, queued in mine:
            met = got * alive * q.met_fraction(budget0 - lat_ms / 1000.0, found_full=queued)
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
