"""A discrete-event simulation of one deployment's fleet, in simulated time, driving the live
policy code.

Owns the event loop (arrivals, engine steps, health probes, autoscaler ticks, wait timeouts,
replica deaths) and the replica records (``core.fleet.ReplicaRecord``, as the live registry keeps
them); each request's path through the gateway (admission, routing, hold, retry, ejection) is
``sim.gateway.SimGateway``'s. Every decision is taken by the live policy code through
``sim.drivers``. Each replica is a ``sim.replica.SimReplica``: the engine's own scheduler and
block manager, stepped with the step times a ``--simulate`` replica sleeps, so prefill is batched
and chunked as on the engine.

Timing, stated: a replica answers ``/health`` ``cold_start_s`` after its start and becomes
routable at the next probe; a request dispatched while a replica steps joins its next step; a
streamed answer's first byte is its first token, a plain answer's is its last (so a replica
failure before then, or none within ``first_byte_timeout_s`` for a stream or ``unary_timeout_s``
for a plain answer, is retried, as live); network, tokenization and
gateway time are zero. It must not sleep, read the clock or do IO.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.errors import ShipitError
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.engine.sim_timing import ReplicaModel, ReplicaTiming
from shipit.policy import health
from shipit.policy.autoscaling.settings import lifecycle_config
from shipit.policy.health import HealthSnapshot, HealthState, ProbeOutcome
from shipit.policy.lifecycle import LifecycleSnapshot, LifecycleState
from shipit.sim import drivers
from shipit.sim.gateway import SimCall, SimGateway
from shipit.sim.policies import ScalingPolicy
from shipit.sim.replica import SimReplica
from shipit.sim.results import ReplicaKill, SimRequest, SimResult


@dataclass(slots=True)
class _Replica:
    rid: str
    engine: SimReplica
    started_s: float
    up_s: float  # /health answers from here on
    alive: bool = True
    step_end_s: float | None = None  # the step event pending, None while idle
    step_token: int = 0  # a step event counts only while the token is unchanged
    stopped_s: float | None = None
    requests: dict[str, SimCall] = field(default_factory=dict)


class FleetSim:
    """Runs one scaling policy over one trace; ``run`` returns the result."""

    def __init__(
        self,
        policy: ScalingPolicy,
        replica: ReplicaModel,
        deployment: DeploymentConfig | None = None,
        *,
        tick_s: float = 1.0,
        initial_replicas: int = 0,
        timing: ReplicaTiming | None = None,
        decode_runs: bool = True,
        log: DecisionLog = NO_LOG,
    ) -> None:
        self.policy, self.model, self.tick_s, self.log = policy, replica, tick_s, log
        self.decode_runs = decode_runs
        self.deployment = deployment or DeploymentConfig(name="sim", replicas=0)
        self.name = self.deployment.name
        self.timing = timing or replica.resolve()
        if self.timing.num_kv_blocks < 1:
            raise ShipitError(f"{replica.model} does not fit on {replica.tp}x {replica.gpu}")
        self.replicas: dict[str, _Replica] = {}
        self.records: dict[str, ReplicaRecord] = {}
        self.result = SimResult(policy.name)
        self.gateway = SimGateway(self, self.deployment, log)
        self._events: list[tuple[float, int, Callable[[float, Any], None], Any]] = []
        self._seq = 0
        self._tick_token = 0
        self._end_s = 0.0
        self.health_state = HealthState()
        self.lifecycle = lifecycle_config(self.deployment)
        self.lifecycle_state = LifecycleState()
        self._came_up: list[str] = []
        for _ in range(initial_replicas):  # pre-warmed: ready at t=0
            self._start(0.0, ready=True)

    # ----- the loop -------------------------------------------------------------------------
    def push(self, at_s: float, handler: Callable[[float, Any], None], payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_s, self._seq, handler, payload))

    def run(
        self, trace: Sequence[SimRequest], end_s: float, kills: Sequence[ReplicaKill] = ()
    ) -> SimResult:
        self._end_s = end_s
        for i, spec in enumerate(trace):
            self.push(spec.arrival_s, self.gateway.on_arrive, (i, spec))
        for kill in kills:
            self.push(kill.at_s, self._on_kill, kill.replica_id)
        self.push(0.0, self._on_tick, self._tick_token)
        self.push(0.0, self._on_probe)
        while self._events:
            now, _, handler, payload = heapq.heappop(self._events)
            handler(now, payload)
        for r in self.replicas.values():
            stop = r.stopped_s if r.stopped_s is not None else end_s
            self.result.replica_seconds += max(stop - r.started_s, 0.0)
        return self.result

    # ----- replicas -------------------------------------------------------------------------
    def _start(self, now: float, *, ready: bool = False) -> None:
        rid = f"r{len(self.replicas)}"
        engine = SimReplica(self.timing, decode_runs=self.decode_runs)
        up_s = now if ready else now + self.model.cold_start_s
        self.replicas[rid] = _Replica(rid, engine, now, up_s)
        self.records[rid] = ReplicaRecord(
            rid,
            f"sim://{rid}",
            deployment=self.name,
            backend="sim",
            state=ReplicaState.READY if ready else ReplicaState.STARTING,
            state_since_s=now,
            max_concurrency=self.deployment.queueing.max_concurrency,
        )
        self.result.scale_events += 1
        live = sum(1 for r in self.replicas.values() if r.stopped_s is None)
        self.result.peak_replicas = max(self.result.peak_replicas, live)

    def _stop(self, now: float, rid: str) -> None:
        rep = self.replicas[rid]
        if rep.stopped_s is None:
            rep.stopped_s = now
        self.records.pop(rid, None)

    def _set_state(self, now: float, rid: str, state: ReplicaState) -> None:
        record = self.records.get(rid)
        if record is not None and record.state is not state:
            self.records[rid] = record.evolve(state=state, state_since_s=now)

    def view(self) -> tuple[ReplicaRecord, ...]:
        return tuple(self.records.values())

    def _cold(self, now: float) -> bool:
        return not any(r.routable(now) for r in self.records.values())

    def _on_kill(self, now: float, rid: str) -> None:
        rep = self.replicas.get(rid)
        if rep is None or not rep.alive or rep.stopped_s is not None:
            return
        rep.alive = False
        for req in list(rep.requests.values()):
            self.gateway.fail_attempt(now, req, "replica died")

    def start_step(self, now: float, rep: _Replica) -> None:
        rep.step_end_s = None
        self.sync_step(rep, rep.engine.start_step(now))

    def sync_step(self, rep: _Replica, end_s: float | None) -> None:
        """(Re)schedule the replica's step event: an arrival can cut a decode run short."""
        if end_s is not None and end_s != rep.step_end_s:
            rep.step_end_s = end_s
            rep.step_token += 1
            self.push(end_s, self._on_step, (rep.rid, rep.step_token))

    def _on_step(self, now: float, payload: tuple[str, int]) -> None:
        rid, token = payload
        rep = self.replicas[rid]
        if not rep.alive or token != rep.step_token:
            return
        events = rep.engine.finish_step()
        # The engine steps on at once; what completions free is dispatched behind that step.
        self.start_step(now, rep)
        for ev in events:
            req = rep.requests[ev.request_id]
            if ev.output_tokens == 1:
                self.gateway.first_token(now, req)
            if ev.finished:
                del rep.requests[ev.request_id]
                self.gateway.release(now, rid, ok=True, why="", req=req)
                self.gateway.finish(req, 200, "ok", now)
        if events:
            self.gateway.dispatch(now)

    # ----- health and autoscaling -----------------------------------------------------------
    def _on_probe(self, now: float, _: object) -> None:
        """The monitor's tick: one probe of each replica, judged by the health policy."""
        self.health_state = health.forget(self.health_state, self.records)
        for rid, record in list(self.records.items()):
            if not health.probe_wanted(record):
                continue
            rep = self.replicas[rid]
            if rep.alive and now >= rep.up_s:
                outcome = ProbeOutcome(True, 200)
            else:
                outcome = ProbeOutcome(False, None, "connection refused")
            snapshot = HealthSnapshot(now, record, outcome)
            decision, self.health_state = drivers.health_check(
                self.deployment.health,
                snapshot,
                self.health_state,
                deployment=self.name,
                log=self.log,
            )
            if decision.target is not None:
                if decision.target is ReplicaState.READY and record.state is ReplicaState.STARTING:
                    self._came_up.append(rid)
                self._set_state(now, rid, decision.target)
        self.gateway.dispatch(now)
        if now + self.deployment.health_interval_s <= self._end_s:
            self.push(now + self.deployment.health_interval_s, self._on_probe)

    def _on_tick(self, now: float, token: int) -> None:
        """The autoscaler's tick: the lifecycle policy's stops, then the scaling policy."""
        if token != self._tick_token:
            return  # a wake-up tick came in between and restarted the interval
        dead = frozenset(rid for rid in self.records if not self.replicas[rid].alive)
        life_snap = LifecycleSnapshot(now, self.view(), dead, frozenset(), tuple(self._came_up))
        self._came_up.clear()
        life, self.lifecycle_state = drivers.lifecycle_step(
            self.lifecycle, life_snap, self.lifecycle_state, deployment=self.name, log=self.log
        )
        gone = {step.replica_id for step in life.steps}
        for rid in gone:
            self._stop(now, rid)
        gw = self.gateway
        snapshot = drivers.autoscaling_snapshot(
            now,
            self.view(),
            len(gw.queue),
            arrivals=gw.arrivals,
            completed=gw.completed,
            service_s=gw.service_s,
            oldest_wait_s=max((now - e.enqueued_s for e in gw.queue.entries()), default=0.0),
            first_tokens=gw.take_first_tokens(),
            prefill_s=gw.prefill_s,
        )
        order = self.policy.tick(snapshot, deployment=self.name, log=self.log)
        for rid in order.replace:
            self._stop(now, rid)
        counted = sum(1 for r in snapshot.replicas if r.state is not ReplicaState.DRAINING)
        starts = order.target - (counted - len(order.replace) - len(order.stop))
        if starts > 0 and not life.starts_held(now):
            for _ in range(starts):
                self._start(now)
        for rid in order.stop:
            self._set_state(now, rid, ReplicaState.DRAINING)
        self._tick_token += 1
        if now + self.tick_s <= self._end_s:
            self.push(now + self.tick_s, self._on_tick, self._tick_token)

    def wake_autoscaler(self, now: float) -> None:
        self._tick_token += 1
        self.push(now, self._on_tick, self._tick_token)
