"""The multi-region fleet simulator: planes, client regions, pools and faults over hours.

At thousands of GPUs over a day the engine's steps are not simulated: each replica is
``concurrency`` slots with a service time from the request lengths and the per-request token
rates, and each plane's gateway one queue (``sim.fleet_model``). The fleet's own decisions run
the live pure policies:

- **traffic**, every ``tick_s``: a trace's requests one by one at their own times
  (``sim.fleet_exact``), or Poisson arrivals per client region, routed in fractions
  through ``policy.global_routing.decide`` as single requests would be (nearest serving plane
  with a free slot, spill-over when it is full, residency; ``sim.fleet_traffic``); each
  plane's queue scores the tick's requests against the TTFT SLO, network latency in;
- **failover**, every ``failover.probe_interval_s`` while a plane is out or recovering
  (``policy.failover.decide``); scheduled outages (``simulation.outages``) fail the probes;
- **placement**, every ``placement_interval_s`` and when the serving planes change
  (``policy.placement``): per-region demand onto planes, giving each plane's autoscaler bounds;
- **autoscaling**, every ``autoscale_interval_s`` per plane (``policy.autoscaling.decide``, the
  live autoscaler's function, fed the plane's arrivals, completions and replicas);
- **pools** for every replica started (``policy.pool_choice``), with the pool's obtain delay;
- **faults**: spot pre-emptions (Poisson per spot replica-hour; notice, drain, replacement,
  stop at the deadline) and GPU failures (Poisson per GPU-hour; detection after
  ``gpu_failure_detect_s``, cordon, stop, replacement), both through ``policy.replica_faults``.

Costs accrue per tick for every machine held, by pool. Deterministic for a seed; no clock, no
IO, no sleeping: the CLI reads files and writes results.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import CapacityPool, ReplicaState
from shipit.policy import failover, placement, pool_choice, replica_faults
from shipit.policy import global_routing as gr
from shipit.policy.autoscaling import AutoscalingSnapshot
from shipit.policy.autoscaling import decide as autoscale
from shipit.policy.node_health import NodeHealthState
from shipit.sim.fleet_exact import ExactTraffic, PlaneQueue, exact_tick
from shipit.sim.fleet_replicas import POOLS, PlaneSim, SimReplica, pool_config
from shipit.sim.fleet_report import FleetTally
from shipit.sim.fleet_setup import FleetSimSetup
from shipit.sim.fleet_traffic import route_tick, sample

READY, NOTICE, PREEMPT, GPU_FAIL, DETECT, DRAINED, OUTAGE, OUTAGE_END, SHORT, SHORT_END = range(10)


class FleetSim:
    def __init__(
        self,
        setup: FleetSimSetup,
        *,
        log: DecisionLog = NO_LOG,
        progress: Callable[[float, float], None] | None = None,
    ) -> None:
        self.s, self.f, self.log, self.progress = setup, setup.fleet, log, progress
        self.sim = setup.fleet.simulation
        self.rng = random.Random(setup.seed)
        self.np_rng = np.random.default_rng(setup.seed)
        self.end_s = setup.hours * 3600.0
        conc = setup.service.concurrency
        self.planes = {
            p.name: PlaneSim(
                p, setup.fleet.gpus_per_replica, conc, shortage_window_s=self.sim.spot_shortage_s
            )
            for p in setup.fleet.planes
        }
        self.replicas: dict[str, SimReplica] = {}
        self.events: list[tuple[float, int, int, str]] = []
        self.seq = 0
        self.cordoned: set[str] = set()
        self.node_state = NodeHealthState()
        self.fault_config = replica_faults.FaultConfig()
        self.route_config = gr.GlobalRoutingConfig(ms_per_time_zone=setup.fleet.ms_per_time_zone)
        self.place_config = placement.PlacementConfig(ms_per_time_zone=setup.fleet.ms_per_time_zone)
        self.fo_config = failover.FailoverPolicyConfig(
            failover.Posture(setup.fleet.posture),
            fail_after=setup.fleet.failover.fail_after,
            recover_after=setup.fleet.failover.recover_after,
        )
        self.fo_state = failover.initial_state(
            [(p.name, failover.PlaneRole(p.role)) for p in setup.fleet.planes]
        )
        self.serving = set(self.fo_state.serving)
        self.regions = setup.demand.regions
        self.tally = FleetTally(tuple(r.name for r in self.regions), tuple(self.planes))
        self.region_arrivals = [0.0] * len(self.regions)
        self.win_req = [0.0] * len(self.regions)
        self.win_met = [0.0] * len(self.regions)
        self.last_placement_s = 0.0
        self.rate_est = list(setup.demand.region_rps(0.0))  # until a placement measured it
        self.peak = dict.fromkeys(self.planes, 0)
        self.exact = (
            ExactTraffic(setup.requests, end_s=self.end_s, seed=setup.seed)
            if setup.requests
            else None
        )
        self.queues = {name: PlaneQueue() for name in self.planes}
        self.next_probe = self.next_scale = 0.0
        self.next_place = math.inf  # set when the run starts

    # -- events -------------------------------------------------------------------------
    def push(self, at_s: float, kind: int, key: str) -> None:
        if at_s <= self.end_s:
            self.seq += 1
            heapq.heappush(self.events, (at_s, self.seq, kind, key))

    def start(
        self, plane: PlaneSim, now: float, *, fault_at: float | None = None, warm: bool = False
    ) -> bool:
        choice = pool_choice.decide(pool_choice.PoolChoiceConfig(), plane.offers(now))
        self.tally.decisions += 1
        self.tally.pool_choices[choice.reason_code] += 1
        if choice.pool is None:
            plane.refused += 1
            return False
        pc = pool_config(plane.cfg, choice.pool)
        assert pc is not None
        self.seq += 1
        rid = f"{plane.name}-{self.seq}"
        state = ReplicaState.READY if warm else ReplicaState.STARTING
        r = SimReplica(rid, plane.name, choice.pool, f"node-{rid}", state, now, fault_at_s=fault_at)
        plane.add(r)
        self.replicas[rid] = r
        if not warm:
            self.push(now + pc.obtain_delay_s, READY, rid)
        if choice.pool is CapacityPool.SPOT and pc.preemptions_per_hour > 0:
            self.push(now + self.rng.expovariate(pc.preemptions_per_hour / 3600.0), NOTICE, rid)
        gpu_rate = self.f.gpu_failures_per_hour * self.f.gpus_per_replica
        if gpu_rate > 0:
            self.push(now + self.rng.expovariate(gpu_rate / 3600.0), GPU_FAIL, rid)
        return True

    def stop(self, r: SimReplica, now: float) -> None:
        self.planes[r.plane].move(r, ReplicaState.STOPPED, now)
        self.replicas.pop(r.rid, None)

    def drain(self, r: SimReplica, now: float, until_s: float) -> None:
        plane = self.planes[r.plane]
        if r.state is ReplicaState.READY and not r.gpu_dead:
            ready = max(plane.count(ReplicaState.READY) - plane.dead_ready, 1)
            share = plane.busy / ready
            plane.busy -= share
            left = until_s - now
            # Exponential service: what is still running at the deadline is cut.
            self.tally.interrupted += share * math.exp(-left / self.s.service.service_s)
        plane.move(r, ReplicaState.DRAINING, now)
        self.push(until_s, DRAINED, r.rid)

    def handle(self, now: float, kind: int, key: str) -> None:
        self.tally.events += 1
        if kind in (OUTAGE, OUTAGE_END, SHORT, SHORT_END):
            plane = self.planes[key]
            if kind == OUTAGE:
                plane.down = True
                self.tally.interrupted += plane.busy
                plane.busy = plane.backlog = 0.0
            elif kind == OUTAGE_END:
                plane.down = False
            else:
                plane.spot_gone = kind == SHORT
            return
        r = self.replicas.get(key)
        if r is None:
            return  # stopped since
        plane = self.planes[r.plane]
        if kind == READY and r.state is ReplicaState.STARTING:
            plane.move(r, ReplicaState.READY, now)
            if r.fault_at_s is not None and not r.gpu_dead:  # a replacement now serving
                self.tally.recoveries += 1
                self.tally.recovery_s.append(now - r.fault_at_s)
        elif kind in (PREEMPT, DRAINED) and r.state is not ReplicaState.STOPPED:
            self.stop(r, now)
        elif kind == NOTICE and r.state is not ReplicaState.DRAINING:
            self.tally.preemptions += 1
            self.faults(now, notices=(self._notice(r, now),))
        elif kind == GPU_FAIL and not r.gpu_dead:
            self.tally.gpu_failures += 1
            if r.state is ReplicaState.READY:
                ready = max(plane.count(ReplicaState.READY) - plane.dead_ready, 1)
                share = plane.busy / ready
                plane.busy -= share
                self.tally.interrupted += share
            plane.kill_gpu(r)
            r.fault_at_s = now
            self.push(now + self.sim.gpu_failure_detect_s, DETECT, r.rid)
        elif kind == DETECT and r.gpu_dead:
            failed_at = r.fault_at_s if r.fault_at_s is not None else now
            self.faults(now, failures=(replica_faults.GpuFailure(r.rid, r.node, failed_at),))

    def _notice(self, r: SimReplica, now: float) -> replica_faults.SpotNotice:
        pc = pool_config(self.planes[r.plane].cfg, CapacityPool.SPOT)
        notice_s = pc.notice_s if pc is not None else 0.0
        return replica_faults.SpotNotice(r.rid, r.node, now + notice_s)

    def faults(
        self,
        now: float,
        *,
        notices: tuple[replica_faults.SpotNotice, ...] = (),
        failures: tuple[replica_faults.GpuFailure, ...] = (),
    ) -> None:
        nodes = tuple(r.node for r in self.replicas.values()) + tuple(self.cordoned)
        snap = replica_faults.FaultSnapshot(
            now, nodes, frozenset(self.cordoned), notices=notices, failures=failures
        )
        state = self.node_state
        d, self.node_state = replica_faults.decide(self.fault_config, snap, state)
        self.tally.decisions += 1
        self.log.record("replica_faults", "fleet", snap, state, d)
        deadlines = {n.replica_id: n.deadline_s for n in notices}
        fault_at = {f.replica_id: f.failed_at_s for f in failures}
        # by id before any step: a replica stopped by one step is replaced by the next
        known = {s.target: self.replicas[s.target] for s in d.steps if s.target in self.replicas}
        for step in d.steps:
            A = replica_faults.FaultAction
            if step.action is A.CORDON:
                if step.reason_code == "cordon_cap_reached":
                    self.tally.cordons_held += 1
                else:
                    self.cordoned.add(step.target)
                    self.tally.cordons += 1
                continue
            r = known.get(step.target)
            if r is None:
                continue
            plane = self.planes[r.plane]
            if step.action is A.REPLACE:
                at = fault_at.get(r.rid, deadlines.get(r.rid, now))
                self.start(plane, now, fault_at=at)
            elif r.rid not in self.replicas:
                continue  # stopped since
            elif step.action is A.DRAIN:
                plane.preempted_at.append(now)
                self.drain(r, now, deadlines.get(r.rid, now))
            elif step.action is A.STOP and step.at_s <= now:
                self.stop(r, now)
            elif step.action is A.STOP:
                self.push(step.at_s, PREEMPT, r.rid)

    # -- control loops ------------------------------------------------------------------
    def probe(self, now: float) -> None:
        fo = self.fo_state
        if all(not p.down for p in self.planes.values()) and all(
            s.up and s.failures == 0 for s in fo.planes
        ):
            return  # everything up and known up: the probes would change nothing
        snap = failover.FailoverSnapshot(
            now,
            tuple(
                failover.PlaneProbe(n, not p.down, "gateway unreachable" if p.down else "")
                for n, p in self.planes.items()
            ),
        )
        d, self.fo_state = failover.decide(self.fo_config, snap, fo)
        self.tally.decisions += 1
        if d.changes:
            self.log.record("failover", "fleet", snap, fo, d)
            for c in d.changes:
                self.tally.failovers.append(
                    {
                        "t_h": round(now / 3600, 4),
                        "plane": c.plane,
                        "reason_code": c.reason_code,
                        "reason": c.reason,
                    }
                )
            self.serving = set(d.serving)
            self.place(now)

    def place(self, now: float) -> None:
        svc, util = self.s.service, self.s.target_utilization
        span = now - self.last_placement_s
        if span >= 60.0:  # measured since the last placement (a shorter span is noise)
            self.rate_est = [a / span for a in self.region_arrivals]
            self.region_arrivals = [0.0] * len(self.regions)
            self.last_placement_s = now
        rates = self.rate_est
        per_replica = svc.concurrency * util / svc.service_s
        snap = placement.PlacementSnapshot(
            tuple(
                placement.RegionDemand(r.name, r.utc_offset_h, rate / per_replica, r.residency)
                for r, rate in zip(self.regions, rates, strict=True)
            ),
            tuple(
                placement.PlaneCapacity(
                    p.name,
                    p.cfg.utc_offset_h,
                    p.name in self.serving,
                    p.capacity(),
                    p.cheapest_usd_per_replica_hour(),
                    frozenset(p.cfg.residency),
                    p.cfg.min_replicas,
                )
                for p in self.planes.values()
            ),
        )
        d = placement.decide(self.place_config, snap)
        self.tally.decisions += 1
        self.tally.placements[d.reason_code] += 1
        self.log.record("placement", "fleet", snap, None, d)
        self.region_arrivals = [0.0] * len(self.regions)
        self.win_req = [0.0] * len(self.regions)
        self.win_met = [0.0] * len(self.regions)
        self.last_placement_s = now
        for t in d.planes:
            plane = self.planes[t.plane]
            plane.scaling = self._scaling(plane, t.min_replicas, t.max_replicas)

    def _scaling(self, plane: PlaneSim, low: int, high: int) -> AutoscalingConfig:
        delays = [
            pc.obtain_delay_s for pool in POOLS if (pc := pool_config(plane.cfg, pool)) is not None
        ]
        every = self.sim.autoscale_interval_s
        window = max(60.0, 4 * every)
        return AutoscalingConfig(
            min_replicas=low,
            max_replicas=max(high, low, 1),
            target_concurrency=float(self.s.service.concurrency),
            target_utilization=self.s.target_utilization,
            autoscaling_window_s=window,
            panic_window_s=min(window, 2 * every),
            scale_down_delay_s=600.0,
            cold_start_s=min(delays),
            startup_timeout_s=max(delays) + 600.0,
        )

    def autoscale(self, now: float) -> None:
        for plane in self.planes.values():
            if plane.down or plane.scaling is None:
                continue
            records = plane.records(now)
            snap = AutoscalingSnapshot(
                now,
                records,
                queued=round(plane.backlog),
                arrivals=plane.arrivals,
                completed=plane.completed,
                service_s=plane.service_total_s,
            )
            d, plane.scaling_state = autoscale(plane.scaling, snap, plane.scaling_state)
            self.tally.decisions += 1
            self.tally.scale_decisions[d.reason_code] += 1
            # As many as the autoscaler stops, but by pool: the dearest to keep go first.
            stop: tuple[str, ...] = ()
            if d.stop:
                stuck = set(d.replace)
                stop = pool_choice.release_order(
                    [r for r in records if r.replica_id not in stuck], len(d.stop), plane.marginal()
                )
            for rid in (*d.replace, *stop):
                r = self.replicas.get(rid)
                if r is None:
                    continue
                if r.state is ReplicaState.READY:
                    self.drain(r, now, now + self.s.service.service_s)
                else:
                    self.stop(r, now)
            for _ in range(max(d.target - d.current, 0)):
                if not self.start(plane, now):
                    break

    # -- the run ------------------------------------------------------------------------
    def events_until(self, now: float) -> None:
        """Events and probes up to ``now``, in time order (an event first on a tie)."""
        probe_s = self.f.failover.probe_interval_s
        while True:
            at = self.events[0][0] if self.events else math.inf
            if self.next_probe <= now and self.next_probe < at:
                self.probe(self.next_probe)
                self.next_probe += probe_s
            elif at <= now:
                _, _, kind, key = heapq.heappop(self.events)
                self.handle(at, kind, key)
            else:
                break

    def catch_up(self, t: float) -> bool:
        """Within a tick (request-exact traffic): everything due by ``t`` at its own time:
        events, probes, placement and autoscaling. Whether anything ran."""
        ran = False
        while True:
            at = min(
                self.events[0][0] if self.events else math.inf,
                self.next_probe,
                self.next_place,
                self.next_scale,
            )
            if at > t:
                return ran
            ran = True
            self.events_until(at)
            if self.next_place <= at:
                self.place(at)
                self.next_place += self.sim.placement_interval_s
            if self.next_scale <= at:
                self.autoscale(at)
                self.next_scale += self.sim.autoscale_interval_s

    def run(self) -> dict[str, Any]:
        dt = self.sim.tick_s
        for w in self.sim.outages:
            self.push(w.at_h * 3600, OUTAGE, w.plane)
            self.push((w.at_h + w.for_h) * 3600, OUTAGE_END, w.plane)
        for w in self.sim.spot_shortages:
            self.push(w.at_h * 3600, SHORT, w.plane)
            self.push((w.at_h + w.for_h) * 3600, SHORT_END, w.plane)
        while self.events and self.events[0][0] <= 0.0:  # what holds from the start
            at, _, kind, key = heapq.heappop(self.events)
            self.handle(at, kind, key)
        self.place(0.0)
        for plane in self.planes.values():  # the fleet starts warm at its placement
            assert plane.scaling is not None
            for _ in range(
                plane.scaling.min_replicas
                + (plane.scaling.max_replicas - plane.scaling.min_replicas) // 2
            ):
                if not self.start(plane, 0.0, warm=True):
                    break
        self.next_place = self.sim.placement_interval_s
        next_sample = 0.0
        ticks = math.ceil(self.end_s / dt)
        for i in range(ticks):
            now = i * dt
            self.events_until(now)
            if now >= self.next_place:
                self.place(now)
                self.next_place += self.sim.placement_interval_s
            if now >= self.next_scale:
                self.autoscale(now)
                self.next_scale += self.sim.autoscale_interval_s
            if self.exact is not None:
                exact_tick(self, now, min(dt, self.end_s - now))
            else:
                route_tick(self, now, min(dt, self.end_s - now))
            for plane in self.planes.values():
                plane.charge(min(dt, self.end_s - now))
                held = sum(plane.holding(p) for p in POOLS)
                if held > self.peak[plane.name]:
                    self.peak[plane.name] = held
            if now >= next_sample:
                sample(self, now)
                next_sample += self.s.sample_s
                if self.progress is not None:
                    self.progress(now, self.end_s)
        if self.progress is not None:
            self.progress(self.end_s, self.end_s)
        return self.tally.as_dict(
            cost={n: {k.value: v for k, v in p.cost_usd.items()} for n, p in self.planes.items()},
            gpu_hours={
                n: {k.value: v for k, v in p.gpu_hours.items()} for n, p in self.planes.items()
            },
            replicas_end={
                n: {pool.value: p.holding(pool) for pool in POOLS if pool_config(p.cfg, pool)}
                for n, p in self.planes.items()
            },
            peak_replicas=self.peak,
            hours=self.s.hours,
            started=sum(p.started for p in self.planes.values()),
            refused=sum(p.refused for p in self.planes.values()),
        )


def simulate_fleet(
    setup: FleetSimSetup,
    *,
    log: DecisionLog = NO_LOG,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """Run the fleet for ``setup.hours`` and return the report (``FleetTally.as_dict``)."""
    return FleetSim(setup, log=log, progress=progress).run()
