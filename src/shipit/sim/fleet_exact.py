"""Request-exact traffic for the fleet simulator: every request of a trace at its own time.

The fluid model (``sim.fleet_traffic``) draws Poisson counts per tick and scores them against
each plane's M/G/c queue; it is what scales to 10,000 GPUs over a day. Given a trace, a fleet
can instead be replayed request by request (``traffic="requests"``):

- each request arrives at its timestamp (the trace repeats to cover the run), from the client
  region its ``region`` field names, else one drawn (seeded) by the regions' weights then;
- the front door's choice is ``policy.global_routing.decide`` asked once, with every plane's
  free slots and queue at that moment, as the live front door asks it;
- a plane's gateway is a first-come-first-served queue in front of its slots (its ready
  replicas x ``concurrency``): a request starts when the earliest slot frees, holds it for its
  own service time (its prompt over the prefill rate plus its output over the decode rate), and
  meets the SLO when network latency + its wait + its prefill is within the TTFT SLO; one that
  would wait past ``queue_timeout_s`` is dropped;
- events (a replica ready, stopped, pre-empted or failed), probes, placement and autoscaling
  run at their own times between the requests, not at tick boundaries; slots follow the
  plane's ready replicas: new ones are free at once; when replicas go, the slots that free
  last go with them (their requests finish: drained).

Counts feed the same tally and the autoscaler the same snapshot fields as the fluid model.
Pure: no clock, no IO.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

from shipit.core.fleet import ReplicaState
from shipit.policy import global_routing as gr
from shipit.sim.fleet_replicas import PlaneSim

if TYPE_CHECKING:
    from shipit.sim.regions import FleetSim

_READY = ReplicaState.READY


@dataclass(frozen=True, slots=True)
class TraceArrival:
    """One request of the trace: when (s from the trace's start), its tokens, and its client
    region's index in the traffic section (None: draw one)."""

    at_s: float
    prompt_tokens: int
    output_tokens: int
    region: int | None = None


@dataclass(slots=True)
class PlaneQueue:
    """One plane's gateway queue, request by request."""

    free_at: list[float] = field(default_factory=list)  # heap: when each slot frees
    ends: list[tuple[float, float]] = field(default_factory=list)  # heap: (end, service s)
    starts: deque[float] = field(default_factory=deque)  # waiting ones' starts, in order

    def settle(self, now: float) -> tuple[int, float]:
        """Forget what has ended by ``now``; returns (completed, their service seconds)."""
        done, busy_s = 0, 0.0
        while self.ends and self.ends[0][0] <= now:
            busy_s += heapq.heappop(self.ends)[1]
            done += 1
        while self.starts and self.starts[0] <= now:
            self.starts.popleft()
        return done, busy_s

    @property
    def queued(self) -> int:
        return len(self.starts)

    @property
    def in_service(self) -> int:
        return len(self.ends) - len(self.starts)

    def resize(self, slots: int, now: float) -> None:
        have = len(self.free_at)
        if slots > have:
            for _ in range(slots - have):
                heapq.heappush(self.free_at, now)
        elif slots < have:
            self.free_at = sorted(self.free_at)[:slots]  # sorted: still a heap

    def clear(self) -> None:
        self.ends.clear()
        self.starts.clear()
        self.free_at = [0.0] * len(self.free_at)

    def admit(self, at: float, service_s: float, timeout_s: float) -> float | None:
        """The request's wait, or None when it would wait past the timeout (or no slot)."""
        if not self.free_at:
            return None
        start = max(at, self.free_at[0])
        if start - at > timeout_s:
            return None
        heapq.heapreplace(self.free_at, start + service_s)
        heapq.heappush(self.ends, (start + service_s, service_s))
        if start > at:
            self.starts.append(start)
        return start - at


class ExactTraffic:
    """The trace's requests for one run, handed out tick by tick."""

    def __init__(self, arrivals: Sequence[TraceArrival], *, end_s: float, seed: int) -> None:
        self.arrivals = sorted(arrivals, key=lambda q: q.at_s)
        self.end_s = end_s
        # The trace repeats every period_s: its span and one mean gap more.
        n, last = len(self.arrivals), (self.arrivals[-1].at_s if arrivals else 0.0)
        self.period_s = last + (last / (n - 1) if n > 1 and last > 0 else 1.0)
        self.rng = random.Random(seed ^ 0x5EED)
        self.next_i = 0
        self.lap = 0

    def due(self, until_s: float) -> list[tuple[float, TraceArrival]]:
        """The requests arriving before ``until_s`` not handed out yet, in time order."""
        out: list[tuple[float, TraceArrival]] = []
        n = len(self.arrivals)
        while n:
            q = self.arrivals[self.next_i]
            at = q.at_s + self.lap * self.period_s
            if at >= until_s or at >= self.end_s:
                break
            out.append((at, q))
            self.next_i += 1
            if self.next_i == n:
                self.next_i, self.lap = 0, self.lap + 1
        return out

    def region(self, q: TraceArrival, weights: Sequence[float]) -> int:
        if q.region is not None:
            return q.region
        cum = list(accumulate(weights))
        return min(bisect_left(cum, self.rng.random() * cum[-1]), len(weights) - 1)


def exact_tick(sim: FleetSim, now: float, dt: float) -> None:
    """Route and serve the requests arriving in ``[now, now + dt)``."""
    traffic = sim.exact
    assert traffic is not None
    svc, tally = sim.s.service, sim.tally
    queues = sim.queues
    _sync(sim, now)
    for at, req in traffic.due(now + dt):
        _settle(sim, at)
        if sim.catch_up(at):  # a replica ready or gone, a probe, a scaling decision since
            _sync(sim, at)
        i = traffic.region(req, sim.s.demand.region_weights(at))
        reg = sim.regions[i]
        views = []
        for name, p in sim.planes.items():
            q = queues[name]
            slots = len(q.free_at)
            views.append(
                gr.PlaneView(
                    name,
                    p.cfg.utc_offset_h,
                    name in sim.serving,
                    max(slots - q.in_service, 0),
                    queued=q.queued,
                    slots=slots,
                    residency=frozenset(p.cfg.residency),
                )
            )
        d = gr.decide(
            sim.route_config, gr.GlobalRouteSnapshot(reg.utc_offset_h, tuple(views), reg.residency)
        )
        tally.decisions += 1
        tally.requests[i] += 1
        sim.region_arrivals[i] += 1
        sim.win_req[i] += 1
        tally.routed[d.reason_code] += 1
        if d.plane is None:
            tally.unrouted += 1
            continue
        tally.routed_to[f"{reg.name}->{d.plane}"] += 1
        plane = sim.planes[d.plane]
        plane.arrivals += 1
        if plane.down or (plane.dead_ready and sim.rng.random() < _dead_share(plane)):
            tally.failed += 1  # the plane (or the replica it reached) no longer answers
            continue
        prefill_s = req.prompt_tokens / svc.prefill_tokens_per_s
        service_s = prefill_s + req.output_tokens / svc.decode_tokens_per_s
        wait = queues[d.plane].admit(at, service_s, sim.sim.queue_timeout_s)
        if wait is None:
            tally.dropped += 1
            continue
        tally.tokens += req.prompt_tokens + req.output_tokens
        if wait + prefill_s + d.latency_ms / 1000.0 <= sim.s.ttft_slo_s:
            tally.met[i] += 1
            sim.win_met[i] += 1
    _settle(sim, now + dt)


def _settle(sim: FleetSim, t: float) -> None:
    """Count what has finished by ``t``; each plane's queue and requests in service then (what
    the autoscaler and the fault handlers read)."""
    for name, p in sim.planes.items():
        q = sim.queues[name]
        done, busy_s = q.settle(t)
        if done:
            p.completed_f += done
            p.completed = int(p.completed_f)
            p.service_total_s += busy_s
        p.backlog = float(q.queued)
        p.busy = float(q.in_service)


def _sync(sim: FleetSim, now: float) -> None:
    """Each plane's slots as its ready replicas stand at ``now``; a plane down loses its queue."""
    for name, p in sim.planes.items():
        q = sim.queues[name]
        if p.down:
            q.clear()
        q.resize(max(p.serving_slots, 0), now)


def _dead_share(plane: PlaneSim) -> float:
    ready = plane.count(_READY)
    return plane.dead_ready / ready if ready else 1.0
