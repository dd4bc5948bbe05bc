"""A discrete-event simulation of one deployment's fleet, in simulated time, driving the live
policy code.

Owns the event loop (arrivals, engine steps, health probes, autoscaler ticks, wait timeouts,
replica deaths), the replica records (``core.fleet.ReplicaRecord``, as the live registry keeps
them) and each request's path through the gateway, mirroring the live router and proxy: route at
once when nobody waits, else queue (admission), hold while no replica is ready, hand freed
slots to waiters best first, retry a request whose replica failed before its first byte on
another replica (within ``max_attempts`` and the retry budget), eject outliers. Every decision
is taken by the live policy code through ``sim.drivers``. Each replica is a ``sim.replica.
SimReplica``: the engine's own scheduler and block manager, stepped with the step times a
``--simulate`` replica sleeps, so prefill is batched and chunked as on the engine.

Timing, stated: a replica answers ``/health`` ``cold_start_s`` after its start and becomes
routable at the next probe; a request dispatched while a replica steps joins its next step; a
streamed answer's first byte is its first token, a plain answer's is its last (so a replica
failure or ``first_byte_timeout_s`` before then is retried, as live); network, tokenization and
gateway time are zero. It must not sleep, read the clock or do IO.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.errors import CapacityError, ShipitError
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.engine.sim_timing import ReplicaModel, ReplicaTiming
from shipit.policy import health
from shipit.policy.autoscaling.settings import lifecycle_config
from shipit.policy.health import HealthSnapshot, HealthState, ProbeOutcome
from shipit.policy.lifecycle import LifecycleSnapshot, LifecycleState
from shipit.sim import drivers
from shipit.sim.policies import ScalingPolicy
from shipit.sim.replica import SimReplica
from shipit.sim.results import ReplicaKill, RequestResult, SimRequest, SimResult


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
    requests: dict[str, _Req] = field(default_factory=dict)


@dataclass(slots=True)
class _Req:
    spec: SimRequest
    view: RequestView
    attempt: int = 0
    exclude: set[str] = field(default_factory=set)
    replica: str | None = None
    wait_token: int = 0  # a wait's timeout counts only while the token is unchanged
    first_token_s: float | None = None
    sent_s: float = 0.0  # the last dispatch to a replica: service time runs from here

    @property
    def first_byte(self) -> bool:
        """The client has bytes: a failure now is mid-stream, no retry."""
        return self.spec.stream and self.first_token_s is not None


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
        d = self.deployment
        self.queue = drivers.admission_queue(d.queueing)
        self.budget = drivers.retry_budget(d.retries)
        self.outliers = drivers.outlier_detector(d)
        self._routing: dict[str, drivers.RoutingPolicy] = {}
        self.replicas: dict[str, _Replica] = {}
        self.records: dict[str, ReplicaRecord] = {}
        self.waiters: dict[str, _Req] = {}
        self.result = SimResult(policy.name)
        self._events: list[tuple[float, int, Callable[[float, Any], None], Any]] = []
        self._seq = 0
        self._tick_token = 0
        self._end_s = 0.0
        self.health_state = HealthState()
        self.lifecycle = lifecycle_config(self.deployment)
        self.lifecycle_state = LifecycleState()
        self._came_up: list[str] = []
        self.counters: list[float] = [
            0,
            0,
            0.0,
        ]  # arrivals, completed, service seconds (the autoscaler's)
        for _ in range(initial_replicas):  # pre-warmed: ready at t=0
            self._start(0.0, ready=True)

    # ----- the loop -------------------------------------------------------------------------
    def _push(
        self, at_s: float, handler: Callable[[float, Any], None], payload: Any = None
    ) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_s, self._seq, handler, payload))

    def run(
        self, trace: Sequence[SimRequest], end_s: float, kills: Sequence[ReplicaKill] = ()
    ) -> SimResult:
        self._end_s = end_s
        for i, spec in enumerate(trace):
            self._push(spec.arrival_s, self._on_arrive, (i, spec))
        for kill in kills:
            self._push(kill.at_s, self._on_kill, kill.replica_id)
        self._push(0.0, self._on_tick, self._tick_token)
        self._push(0.0, self._on_probe)
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

    def _view(self) -> tuple[ReplicaRecord, ...]:
        return tuple(self.records.values())

    def _cold(self, now: float) -> bool:
        return not any(r.routable(now) for r in self.records.values())

    def _on_kill(self, now: float, rid: str) -> None:
        rep = self.replicas.get(rid)
        if rep is None or not rep.alive or rep.stopped_s is not None:
            return
        rep.alive = False
        for req in list(rep.requests.values()):
            self._fail_attempt(now, req, "replica died")

    def _start_step(self, now: float, rep: _Replica) -> None:
        rep.step_end_s = None
        self._sync_step(rep, rep.engine.start_step(now))

    def _sync_step(self, rep: _Replica, end_s: float | None) -> None:
        """(Re)schedule the replica's step event: an arrival can cut a decode run short."""
        if end_s is not None and end_s != rep.step_end_s:
            rep.step_end_s = end_s
            rep.step_token += 1
            self._push(end_s, self._on_step, (rep.rid, rep.step_token))

    def _on_step(self, now: float, payload: tuple[str, int]) -> None:
        rid, token = payload
        rep = self.replicas[rid]
        if not rep.alive or token != rep.step_token:
            return
        events = rep.engine.finish_step()
        # The engine steps on at once; what completions free is dispatched behind that step.
        self._start_step(now, rep)
        for ev in events:
            req = rep.requests[ev.request_id]
            if ev.output_tokens == 1:
                req.first_token_s = now
            if ev.finished:
                del rep.requests[ev.request_id]
                self._release(now, rid, ok=True, why="")
                self._finish(req, 200, "ok", now)
        if events:
            self._dispatch(now)

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
        self._dispatch(now)
        if now + self.deployment.health_interval_s <= self._end_s:
            self._push(now + self.deployment.health_interval_s, self._on_probe)

    def _on_tick(self, now: float, token: int) -> None:
        """The autoscaler's tick: the lifecycle policy's stops, then the scaling policy."""
        if token != self._tick_token:
            return  # a wake-up tick came in between and restarted the interval
        dead = frozenset(rid for rid in self.records if not self.replicas[rid].alive)
        life_snap = LifecycleSnapshot(now, self._view(), dead, frozenset(), tuple(self._came_up))
        self._came_up.clear()
        life, self.lifecycle_state = drivers.lifecycle_step(
            self.lifecycle, life_snap, self.lifecycle_state, deployment=self.name, log=self.log
        )
        gone = {step.replica_id for step in life.steps}
        for rid in gone:
            self._stop(now, rid)
        arrivals, completed, service_s = self.counters
        waits = (now - e.enqueued_s for e in self.queue.entries())
        snapshot = drivers.autoscaling_snapshot(
            now,
            self._view(),
            len(self.queue),
            arrivals=int(arrivals),
            completed=int(completed),
            service_s=service_s,
            oldest_wait_s=max(waits, default=0.0),
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
            self._push(now + self.tick_s, self._on_tick, self._tick_token)

    def _wake_autoscaler(self, now: float) -> None:
        self._tick_token += 1
        self._push(now, self._on_tick, self._tick_token)

    # ----- requests -------------------------------------------------------------------------
    def _on_arrive(self, now: float, payload: tuple[int, SimRequest]) -> None:
        i, spec = payload
        view = RequestView(
            request_id=f"q{i}",
            deployment=self.name,
            model=self.model.model,
            prompt_tokens_estimate=spec.prompt_tokens,
            max_tokens=spec.output_tokens,
            priority=spec.priority,
            deadline_s=spec.deadline_s,
            stream=spec.stream,
            arrived_s=now,
        )
        drivers.on_request(self.budget, now_s=now)
        self.counters[0] += 1
        self._acquire(now, _Req(spec, view))

    def _acquire(self, now: float, req: _Req) -> None:
        """The router's ``acquire``: a slot at once when free and nobody waits, else wait."""
        req.attempt += 1
        if not self.queue.state.entries:
            avoid = frozenset[str]()
            if req.exclude:
                avoid = drivers.exclusion(
                    self._view(),
                    frozenset(req.exclude),
                    now_s=now,
                    deployment=self.name,
                    log=self.log,
                )
            if self._place(now, req, avoid):
                return
        self._wait(now, req)

    def _routing_policy(self, name: str | None) -> drivers.RoutingPolicy:
        key = name or self.deployment.routing.policy
        if key not in self._routing:
            self._routing[key] = drivers.routing_policy(self.deployment, key)
        return self._routing[key]

    def _place(self, now: float, req: _Req, avoid: frozenset[str]) -> bool:
        decision = drivers.place(
            self._routing_policy(req.view.routing),
            req.view,
            self._view(),
            avoid=avoid,
            now_s=now,
            deployment=self.name,
            log=self.log,
        )
        if decision.replica_id is None:
            return False
        self._send(now, req, decision.replica_id)
        return True

    def _routable(self, now: float) -> int:
        return sum(1 for r in self.records.values() if r.routable(now))

    def _wait(self, now: float, req: _Req) -> None:
        """The router's ``_wait``: offer to the admission queue, dispatch, then wait as long
        as the admission decision says."""
        rid = req.view.request_id
        decision = drivers.admit(
            self.queue,
            req.view,
            exclude=frozenset(req.exclude),
            routable=self._routable(now),
            now_s=now,
            deployment=self.name,
            log=self.log,
        )
        if not decision.admitted:
            self._finish(req, decision.status or 429, decision.reason_code, now)
            return
        if decision.shed is not None:
            shed = self.waiters.pop(decision.shed.request_id, None)
            self.queue.remove(decision.shed.request_id)
            if shed is not None:
                self._finish(shed, 429, "shed", now)
        self.waiters[rid] = req
        req.wait_token += 1
        self._dispatch(now)
        if rid not in self.waiters:
            return  # placed at once
        if decision.cold_hold and self.policy.wake_on_cold_arrival:
            self._wake_autoscaler(now)
        self._push(now + decision.wait_s, self._on_wait_over, (rid, req.wait_token))

    def _on_wait_over(self, now: float, payload: tuple[str, int]) -> None:
        rid, token = payload
        req = self.waiters.get(rid)
        if req is None or req.wait_token != token:
            return
        del self.waiters[rid]
        starting = sum(1 for r in self.records.values() if r.state is ReplicaState.STARTING)
        decision = drivers.give_up(
            self.queue,
            rid,
            routable=self._routable(now),
            starting=starting,
            now_s=now,
            deployment=self.name,
            log=self.log,
        )
        self._finish(req, decision.status or 504, decision.reason_code, now)

    def _dispatch(self, now: float) -> None:
        """The router's ``dispatch``: free slots to waiters, best first, as the admission
        policy names them; one routing cannot place now does not hold back those behind it."""
        tried: set[str] = set()
        while self.queue.state.entries:
            decision = drivers.next_waiter(
                self.queue,
                self._view(),
                tried=frozenset(tried),
                now_s=now,
                deployment=self.name,
                log=self.log,
            )
            for gone in decision.expired:
                req = self.waiters.pop(gone.request_id, None)
                if req is not None:
                    self._finish(req, 504, "deadline", now)
            if decision.entry is None:
                return
            rid = decision.entry.request_id
            req = self.waiters.get(rid)
            if req is None:
                self.queue.remove(rid)  # its request went away
                continue
            if not self._place(now, req, decision.avoid):
                tried.add(rid)
                continue
            self.queue.remove(rid)
            del self.waiters[rid]
            req.wait_token += 1

    def _send(self, now: float, req: _Req, rid: str) -> None:
        record = self.records[rid]
        self.records[rid] = record.evolve(in_flight=record.in_flight + 1)
        req.replica, req.sent_s = rid, now
        rep = self.replicas[rid]
        if not rep.alive:  # the connection is refused: fails as soon as it is tried
            self._push(now, self._on_refused, (req, "cannot connect"))
            return
        try:
            rep.engine.add(
                req.view.request_id,
                req.spec.prompt_tokens,
                req.spec.output_tokens,
                req.spec.priority,
                now_s=now,
            )
        except ShipitError as exc:  # the replica answers 400 or 429; no retry
            self._push(now, self._on_replica_error, (req, exc))
            return
        rep.requests[req.view.request_id] = req
        timeout_s = self.deployment.retries.first_byte_timeout_s
        self._push(now + timeout_s, self._on_first_byte_timeout, (req, rid, req.attempt))
        if rep.step_end_s is None:
            self._start_step(now, rep)
        else:
            self._sync_step(rep, rep.engine.step_end_s)

    def _on_refused(self, now: float, payload: tuple[_Req, str]) -> None:
        req, why = payload
        self._fail_attempt(now, req, why)

    def _on_replica_error(self, now: float, payload: tuple[_Req, ShipitError]) -> None:
        req, exc = payload
        rid = req.replica or ""
        self._release(now, rid, ok=True, why="")
        busy = isinstance(exc, CapacityError) and exc.field == "max_waiting"
        self._finish(req, 429 if busy else 400, "replica_refused", now)
        self._dispatch(now)

    def _on_first_byte_timeout(self, now: float, payload: tuple[_Req, str, int]) -> None:
        req, rid, attempt = payload
        rep = self.replicas[rid]
        if req.attempt != attempt or rep.requests.get(req.view.request_id) is not req:
            return
        if req.first_byte:
            return
        rep.engine.abort(req.view.request_id, now_s=now)
        self._sync_step(rep, rep.engine.step_end_s)
        self._fail_attempt(now, req, "no first byte in time", status=504)

    def _fail_attempt(self, now: float, req: _Req, why: str, *, status: int = 502) -> None:
        """The request's replica failed it: give the slot back, then retry elsewhere when no
        byte reached the client yet and the retry rules allow; else answer the error."""
        rid = req.replica or ""
        rep = self.replicas.get(rid)
        if rep is not None:
            rep.requests.pop(req.view.request_id, None)
        self._release(now, rid, ok=False, why=why)
        if req.first_byte:
            self._finish(req, 502, "mid_stream", now)
        else:
            decision = drivers.may_retry(
                self.budget,
                self.deployment.retries,
                request_id=req.view.request_id,
                attempt=req.attempt,
                now_s=now,
                deployment=self.name,
                log=self.log,
            )
            if decision.allowed:
                req.exclude.add(rid)
                req.first_token_s = None  # a non-streamed answer starts over
                self._acquire(now, req)
            else:
                self._finish(req, status, "replica_failed", now)
        self._dispatch(now)

    def _release(self, now: float, rid: str, *, ok: bool, why: str) -> None:
        record = self.records.get(rid)
        if record is None:
            return
        record = record.evolve(in_flight=max(record.in_flight - 1, 0))
        self.records[rid] = record
        ejection = drivers.outcome(
            self.outliers,
            rid,
            ok=ok,
            why=why,
            now_s=now,
            fleet_size=len(self.records),
            deployment=self.name,
            log=self.log,
        )
        if ejection is not None:
            self.records[rid] = record.evolve(ejected_until_s=ejection.until_s)

    def _finish(self, req: _Req, status: int, code: str, now: float) -> None:
        arrival = req.spec.arrival_s
        ttft = req.first_token_s - arrival if req.first_token_s is not None else None
        if status == 200:
            self.counters[1] += 1
            self.counters[2] += now - req.sent_s
        self.result.requests.append(
            RequestResult(
                req.view.request_id,
                arrival,
                status,
                code,
                ttft_s=ttft,
                e2e_s=now - arrival if status == 200 else None,
                attempts=req.attempt,
                replica_id=req.replica,
            )
        )
