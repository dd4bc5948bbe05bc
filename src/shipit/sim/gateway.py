"""The gateway half of the fleet simulation: each request's path, mirroring the live router and
request core. Route at once when nobody waits, else queue (admission); hold while no replica is
ready; hand freed slots to waiters best first; retry a request whose replica failed before its
first byte on another replica (within ``max_attempts`` and the retry budget); eject outliers.
Every decision is taken by the live policy code through ``sim.drivers``; ``sim.fleet`` owns the
event loop and the replicas. It must not sleep, read the clock or do IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import DecisionLog
from shipit.core.errors import CapacityError, ShipitError
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.policy.routing import PaceBook, RouteDecision, computed_tokens
from shipit.sim import drivers
from shipit.sim.oracle import prefill_s
from shipit.sim.prompts import prompt_token_ids
from shipit.sim.results import RequestResult, SimRequest

if TYPE_CHECKING:
    from shipit.sim.fleet import FleetSim


@dataclass(slots=True)
class SimCall:
    """One request on its way through the simulated gateway."""

    spec: SimRequest
    view: RequestView
    attempt: int = 0
    exclude: set[str] = field(default_factory=set)
    replica: str | None = None
    wait_token: int = 0  # a wait's timeout counts only while the token is unchanged
    first_token_s: float | None = None
    sent_s: float = 0.0  # the last dispatch to a replica: service time runs from here
    token_ids: list[int] | None = None  # the prompt's content, when the trace gives prefixes
    computed_tokens: int = 0  # prompt tokens its replica computes (cached prefix off)
    prefilled: bool = False  # its first token came: those tokens are computed
    prefill_alone_s: float = 0.0  # its prompt's prefill alone on an idle replica

    @property
    def first_byte(self) -> bool:
        """The client has bytes: a failure now is mid-stream, no retry."""
        return self.spec.stream and self.first_token_s is not None


class SimGateway:
    """The router and request core of one simulated deployment."""

    def __init__(self, fleet: FleetSim, deployment: DeploymentConfig, log: DecisionLog) -> None:
        self.fleet, self.deployment, self.log = fleet, deployment, log
        self.name = deployment.name
        self.queue = drivers.admission_queue(deployment.queueing)
        self.budget = drivers.retry_budget(deployment.retries)
        self.outliers = drivers.outlier_detector(deployment)
        self._routing: dict[str, drivers.RoutingPolicy] = {}
        # What queue-aware prefix affinity reads, as the router keeps it.
        self.paces = PaceBook(
            prefill_s_per_token=deployment.routing.prefix_cache.prefill_us_per_token / 1e6
        )
        self.waiters: dict[str, SimCall] = {}
        # What the autoscaler's snapshot counts: arrivals, completions, their service seconds,
        # and the arrivals' prompts' prefill alone, seconds.
        self.arrivals, self.completed, self.service_s = 0, 0, 0.0
        self.prefill_s = 0.0
        # (time to first token inside the replica, prefill alone) since the last tick
        self.first_tokens: list[tuple[float, float]] = []

    def on_arrive(self, now: float, payload: tuple[int, SimRequest]) -> None:
        i, spec = payload
        tokens = prompt_token_ids(spec, i) if spec.prefix_blocks else None
        hashes: tuple[int, ...] = ()
        if tokens is not None and self.routing_policy(None).plan.uses("prefix_cache"):
            block = self.deployment.routing.prefix_cache.block_size_tokens
            hashes = tuple(hash_prompt_blocks(tokens, block))  # the gateway's token-exact hashing
        view = RequestView(
            request_id=f"q{i}",
            deployment=self.name,
            model=self.fleet.model.model,
            prompt_tokens_estimate=spec.prompt_tokens,
            prefix_hashes=hashes,
            max_tokens=spec.output_tokens,
            priority=spec.priority,
            deadline_s=spec.deadline_s,
            stream=spec.stream,
            arrived_s=now,
        )
        drivers.on_request(self.budget, now_s=now)
        self.arrivals += 1
        alone = prefill_s(self.fleet.timing, spec)
        self.prefill_s += alone
        self.acquire(now, SimCall(spec, view, token_ids=tokens, prefill_alone_s=alone))

    def acquire(self, now: float, req: SimCall) -> None:
        """The router's ``acquire``: a slot at once when free and nobody waits, else wait."""
        req.attempt += 1
        if not self.queue.state.entries:
            avoid: frozenset[str] = frozenset()
            if req.exclude:
                avoid = drivers.exclusion(
                    self.fleet.view(),
                    frozenset(req.exclude),
                    now_s=now,
                    deployment=self.name,
                    log=self.log,
                )
            if self.place(now, req, avoid).replica_id is not None:
                return
        self.wait(now, req)

    def routing_policy(self, name: str | None) -> drivers.RoutingPolicy:
        key = name or self.deployment.routing.policy
        if key not in self._routing:
            self._routing[key] = drivers.routing_policy(
                self.deployment, key, kv_blocks=self.fleet.timing.num_kv_blocks
            )
        return self._routing[key]

    def place(self, now: float, req: SimCall, avoid: frozenset[str]) -> RouteDecision:
        decision = drivers.place(
            self.routing_policy(req.view.routing),
            req.view,
            self.fleet.view(),
            avoid=avoid,
            now_s=now,
            deployment=self.name,
            paces=self.paces,
            log=self.log,
        )
        if decision.replica_id is not None:
            cfg = self.deployment.routing.prefix_cache
            req.computed_tokens = computed_tokens(cfg, req.view, decision)
            rid = req.view.request_id
            self.paces.placed(decision.replica_id, rid, req.computed_tokens, now_s=now)
            self.send(now, req, decision.replica_id)
        return decision

    def routable(self, now: float) -> int:
        return sum(1 for r in self.fleet.records.values() if r.routable(now))

    def wait(self, now: float, req: SimCall) -> None:
        """The router's ``_wait``: offer to the admission queue, dispatch, then wait as long
        as the admission decision says."""
        rid = req.view.request_id
        decision = drivers.admit(
            self.queue,
            req.view,
            exclude=frozenset(req.exclude),
            routable=self.routable(now),
            now_s=now,
            deployment=self.name,
            log=self.log,
        )
        if not decision.admitted:
            self.finish(req, decision.status or 429, decision.reason_code, now)
            return
        if decision.shed is not None:
            shed = self.waiters.pop(decision.shed.request_id, None)
            self.queue.remove(decision.shed.request_id)
            if shed is not None:
                self.finish(shed, 429, "shed", now)
        self.waiters[rid] = req
        req.wait_token += 1
        self.dispatch(now)
        if rid not in self.waiters:
            return  # placed at once
        if decision.cold_hold and self.fleet.policy.wake_on_cold_arrival:
            self.fleet.wake_autoscaler(now)
        self.fleet.push(now + decision.wait_s, self.on_wait_over, (rid, req.wait_token))

    def on_wait_over(self, now: float, payload: tuple[str, int]) -> None:
        rid, token = payload
        req = self.waiters.get(rid)
        if req is None or req.wait_token != token:
            return
        del self.waiters[rid]
        starting = sum(1 for r in self.fleet.records.values() if r.state is ReplicaState.STARTING)
        decision = drivers.give_up(
            self.queue,
            rid,
            routable=self.routable(now),
            starting=starting,
            now_s=now,
            deployment=self.name,
            log=self.log,
        )
        self.finish(req, decision.status or 504, decision.reason_code, now)

    def dispatch(self, now: float) -> None:
        """The router's ``dispatch``: free slots to waiters, best first, as the admission
        policy names them; one routing cannot place now does not hold back those behind it."""
        tried: set[str] = set()
        held: int | None = None  # best priority of a waiter holding out for its cache holder
        while self.queue.state.entries:
            decision = drivers.next_waiter(
                self.queue,
                self.fleet.view(),
                tried=frozenset(tried),
                now_s=now,
                deployment=self.name,
                held_priority=held,
                log=self.log,
            )
            for gone in decision.expired:
                req = self.waiters.pop(gone.request_id, None)
                if req is not None:
                    self.finish(req, 504, "deadline", now)
            if decision.entry is None:
                return
            rid = decision.entry.request_id
            req = self.waiters.get(rid)
            if req is None:
                self.queue.remove(rid)  # its request went away
                continue
            placed = self.place(now, req, decision.avoid)
            if placed.replica_id is None:
                tried.add(rid)
                if placed.wait_for is not None:
                    p = req.view.priority
                    held = p if held is None else min(held, p)
                continue
            self.queue.remove(rid)
            del self.waiters[rid]
            req.wait_token += 1

    def send(self, now: float, req: SimCall, rid: str) -> None:
        record = self.fleet.records[rid]
        self.fleet.records[rid] = record.evolve(in_flight=record.in_flight + 1)
        req.replica, req.sent_s = rid, now
        rep = self.fleet.replicas[rid]
        if not rep.alive:  # the connection is refused: fails as soon as it is tried
            self.fleet.push(now, self.on_refused, (req, "cannot connect"))
            return
        try:
            rep.engine.add(
                req.view.request_id,
                req.spec.prompt_tokens,
                req.spec.output_tokens,
                req.spec.priority,
                now_s=now,
                token_ids=req.token_ids,
            )
        except ShipitError as exc:  # the replica answers 400 or 429; no retry
            self.fleet.push(now, self.on_replica_error, (req, exc))
            return
        rep.requests[req.view.request_id] = req
        timeout_s = self.deployment.retries.response_timeout_s(stream=req.spec.stream)
        self.fleet.push(now + timeout_s, self.on_first_byte_timeout, (req, rid, req.attempt))
        if rep.step_end_s is None:
            self.fleet.start_step(now, rep)
        else:
            self.fleet.sync_step(rep, rep.engine.step_end_s)

    def first_token(self, now: float, req: SimCall) -> None:
        """Its first token: the prompt is off its replica's backlog (as the router hears it);
        its time inside the replica is kept, beside its prompt's prefill alone, for the
        autoscaler's TTFT guard."""
        req.first_token_s = now
        self.first_tokens.append((now - req.sent_s, req.prefill_alone_s))
        if not req.prefilled and req.replica is not None:
            req.prefilled = True
            self.paces.prefilled(req.replica, req.view.request_id, now_s=now)

    def on_refused(self, now: float, payload: tuple[SimCall, str]) -> None:
        req, why = payload
        self.fail_attempt(now, req, why)

    def on_replica_error(self, now: float, payload: tuple[SimCall, ShipitError]) -> None:
        req, exc = payload
        rid = req.replica or ""
        self.release(now, rid, ok=True, why="", req=req, served=False)
        busy = isinstance(exc, CapacityError) and exc.field == "max_waiting"
        self.finish(req, 429 if busy else 400, "replica_refused", now)
        self.dispatch(now)

    def on_first_byte_timeout(self, now: float, payload: tuple[SimCall, str, int]) -> None:
        req, rid, attempt = payload
        rep = self.fleet.replicas[rid]
        if req.attempt != attempt or rep.requests.get(req.view.request_id) is not req:
            return
        if req.first_byte:
            return
        rep.engine.abort(req.view.request_id, now_s=now)
        self.fleet.sync_step(rep, rep.engine.step_end_s)
        self.fail_attempt(now, req, "no first byte in time", status=504)

    def fail_attempt(self, now: float, req: SimCall, why: str, *, status: int = 502) -> None:
        """The request's replica failed it: give the slot back, then retry elsewhere when no
        byte reached the client yet and the retry rules allow; else answer the error."""
        rid = req.replica or ""
        rep = self.fleet.replicas.get(rid)
        if rep is not None:
            rep.requests.pop(req.view.request_id, None)
        self.release(now, rid, ok=False, why=why, req=req)
        if req.first_byte:
            self.finish(req, 502, "mid_stream", now)
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
                self.acquire(now, req)
            else:
                self.finish(req, status, "replica_failed", now)
        self.dispatch(now)

    def release(
        self, now: float, rid: str, *, ok: bool, why: str, req: SimCall, served: bool = True
    ) -> None:
        # Only an answer's time is the replica's pace (not a failure's, not a refusal's).
        service_s = now - req.sent_s if ok and served else None
        self.paces.done(rid, req.view.request_id, service_s, now_s=now)
        req.prefilled = False  # a retry computes its prompt again
        record = self.fleet.records.get(rid)
        if record is None:
            return
        record = record.evolve(in_flight=max(record.in_flight - 1, 0))
        self.fleet.records[rid] = record
        ejection = drivers.outcome(
            self.outliers,
            rid,
            ok=ok,
            why=why,
            now_s=now,
            fleet_size=len(self.fleet.records),
            deployment=self.name,
            log=self.log,
        )
        if ejection is not None:
            self.fleet.records[rid] = record.evolve(ejected_until_s=ejection.until_s)

    def take_first_tokens(self) -> tuple[tuple[float, float], ...]:
        """The first tokens since the last call (the autoscaler's tick), forgotten here."""
        out, self.first_tokens = tuple(self.first_tokens), []
        return out

    def finish(self, req: SimCall, status: int, code: str, now: float) -> None:
        self.paces.gone(req.view.request_id)
        arrival = req.spec.arrival_s
        ttft = req.first_token_s - arrival if req.first_token_s is not None else None
        if status == 200:
            self.completed += 1
            self.service_s += now - req.sent_s
        self.fleet.result.requests.append(
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
