"""The router service of one deployment: the thin async driver of admission, routing, retries
and outlier ejection.

For each decision it reads the clock once, builds a frozen snapshot from ``self.registry``
(the live ``ReplicaRecord``s) and its own frozen states (the queue, each routing policy's
state, the retry budget, the outlier records), calls the pure policy
(``policy.admission``, ``policy.routing``, ``policy.reliability``), hands the decision to its
``DecisionLog`` and applies it. What it owns beyond that is what cannot be a record: the
asyncio futures of the waiting requests, the prefix index routing reads (fed after each
routed request and by KV events), and the leases. ``acquire`` returns a ``Lease`` on a replica
slot (at once when one is free and nobody waits ahead, else after waiting in the queue);
``release`` gives it back with the outcome, which feeds outlier ejection and wakes the next
waiter. It must not do HTTP (the gateway proxies, ``monitor`` probes) and must not import a
web framework.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shipit.config.gateway import DeploymentConfig
from shipit.core.clock import Clock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy import admission, reliability, routing
from shipit.policy.admission import QueueState
from shipit.policy.reliability import Ejection, OutlierState
from shipit.policy.routing import PaceBook, PrefixIndex, RouteDecision, RoutePlan, RoutingState
from shipit.services.registry import ReplicaRegistry

_NONE: frozenset[str] = frozenset()


class AdmissionError(Exception):
    """The request cannot wait here: ``status`` 429 (queue full, shed), 503 (the cold-start
    hold ran out) or 504 (deadline, queue timeout)."""

    def __init__(self, status: int, reason_code: str, reason: str, retry_after_s: int | None):
        super().__init__(reason)
        self.status = status
        self.reason_code = reason_code
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Lease:
    """One request's slot on one replica; give it back with ``RouterService.release``."""

    request: RequestView
    replica_id: str
    url: str
    decision: RouteDecision
    queue_wait_s: float = 0.0
    released: bool = False
    placed_s: float = 0.0  # when the router gave it this replica: its service time runs from here
    computed_tokens: int = 0  # prompt tokens the replica computes for it (cached prefix off)
    prefilled: bool = False  # its first token came: those tokens are computed


@dataclass(slots=True)
class RoutePolicy:
    """One composed routing policy as the router drives it: its plan, its current state, and
    the router's prefix index (shared by every plan of the deployment)."""

    plan: RoutePlan
    state: RoutingState
    index: PrefixIndex


@dataclass(slots=True)
class _Waiter:
    request: RequestView
    future: asyncio.Future[Lease]


class RouterService:
    def __init__(
        self, deployment: DeploymentConfig, *, clock: Clock, log: DecisionLog = NO_LOG
    ) -> None:
        self.deployment = deployment
        self.clock = clock
        self.log = log
        self.queue_state = QueueState()
        self.outlier_state = OutlierState()
        self.budget = reliability.initial_budget(deployment.retries)
        self.registry = ReplicaRegistry(
            deployment.name,
            clock=clock,
            max_concurrency=deployment.queueing.max_concurrency,
            version=deployment.rollout.version,
        )
        self.registry.listeners.append(self.dispatch)
        r = deployment.routing
        self.prefix_index = PrefixIndex(
            max_blocks_per_replica=r.prefix_cache.max_blocks_per_replica
        )
        # Service times, tokens still to compute and who waits for which cache holder: what
        # queue-aware prefix affinity reads (``ReplicaPace``).
        self.paces = PaceBook(prefill_s_per_token=r.prefix_cache.prefill_us_per_token / 1e6)
        self.version_weights = tuple(sorted(r.version_weights.items()))
        self._policies: dict[str, RoutePolicy] = {}
        self._waiters: dict[str, _Waiter] = {}
        self.ejections: list[Ejection] = []
        self.decisions_by_reason: Counter[tuple[str, str]] = Counter()
        # Demand, as the autoscaler's snapshot counts it (the simulator counts the same):
        # requests offered (once each, however many attempts), requests answered ok, and their
        # summed service seconds (from the last attempt's dispatch to its last byte; the time
        # queued is not service).
        self.arrivals = 0
        self.completed = 0
        self.service_s = 0.0
        # The arrivals' prompts' prefill, seconds (prompt tokens x the replicas' measured
        # prefill time a token): the autoscaler's prefill demand.
        self.prefill_s = 0.0
        self.default_policy = r.policy
        # Called when a request has to wait and no replica is ready (scale from zero): the
        # autoscaler listens so it need not wait for its next tick.
        self.cold_listeners: list[Callable[[], None]] = []
        # Told every attempt's outcome, and every answer's TTFT / TPOT / SLO verdict (rollout
        # analysis reads them per version).
        self.outcome_listeners: list[Callable[[Lease, str], None]] = []
        # Request id -> the live answer's bytes, for requests mirrored to a shadow version
        # (the request core appends what it relays).
        self.captures: dict[str, list[bytes]] = {}
        self.answer_listeners: list[Callable[[Lease, float | None, float | None, bool], None]] = []
        # Told of each request that has to wait for a slot (after the queue took it).
        self.wait_listeners: list[Callable[[RequestView], None]] = []
        self.policy()  # compose (and check) the default policy now, not on the first request

    @property
    def queue(self) -> QueueState:
        """The admission queue as it stands (a frozen record)."""
        return self.queue_state

    def _record(self, policy: str, snapshot: object, state: object, decision: object) -> None:
        if self.log is not NO_LOG:
            self.log.record(policy, self.deployment.name, snapshot, state, decision)

    # ----- registry (the records live in ``self.registry``) ------------------------------
    def add_replica(
        self,
        replica_id: str,
        url: str,
        *,
        state: ReplicaState = ReplicaState.STARTING,
        external: bool = False,
    ) -> ReplicaRecord:
        return self.registry.add(replica_id, url, state=state, external=external)

    def remove_replica(self, replica_id: str) -> None:
        """Unregister a replica and forget what the router learned about it."""
        self.registry.remove(replica_id)
        self.outlier_state = self.outlier_state.without(replica_id)
        self.prefix_index.forget(replica_id)
        self.paces.forget(replica_id)

    def set_kv_capacity(self, replica_id: str, blocks: int) -> None:
        """The replica's reported KV capacity, in blocks: the prefix index mirrors that much."""
        if blocks >= 1 and self.prefix_index.capacity(replica_id) != blocks:
            self.prefix_index.set_capacity(replica_id, blocks)

    def set_state(self, replica_id: str, state: ReplicaState) -> None:
        self.registry.set_state(replica_id, state)

    def adapter_failed(self, replica_id: str, adapter: str) -> None:
        """Undo the optimistic adapter add of a decision whose adapter load failed."""
        self.registry.drop_adapter(replica_id, adapter)

    def views(self) -> tuple[ReplicaRecord, ...]:
        """Every replica's current record (an ejection that ended no longer blocks routing)."""
        return self.registry.records()

    def set_version_weights(self, weights: Mapping[str, float]) -> None:
        """Traffic share per version from now on (a rollout step); empty: all alike."""
        self.version_weights = tuple(sorted(weights.items()))
        self.dispatch()

    # ----- routing --------------------------------------------------------------------------
    def policy(self, name: str | None = None) -> RoutePolicy:
        """The composed routing policy ``name`` (default: the deployment's), built once."""
        name = name or self.default_policy
        policy = self._policies.get(name)
        if policy is None:
            plan = routing.plan_for(name, self.deployment.routing)
            policy = self._policies[name] = RoutePolicy(plan, RoutingState(), self.prefix_index)
        return policy

    def apply_kv_events(
        self, replica_id: str, *, stored: list[int], evicted: list[int], reset: bool
    ) -> None:
        """Precise prefix index: what a replica's KV-event feed reported."""
        if reset:
            self.prefix_index.forget(replica_id)
        routing.apply_events(self.prefix_index, replica_id, stored=stored, evicted=evicted)

    def _place(
        self, request: RequestView, avoid: frozenset[str], now: float
    ) -> Lease | RouteDecision:
        """Route ``request`` among the replicas it need not avoid; take the slot if one fits,
        else return the decision that left it waiting."""
        replicas = self.registry.records()
        if avoid:
            replicas = tuple(r for r in replicas if r.replica_id not in avoid)
        policy = self.policy(request.routing)
        hits: tuple[tuple[str, int], ...] = ()
        paces: tuple[routing.ReplicaPace, ...] = ()
        reads = policy.plan.reads
        if request.prefix_hashes and "prefix_cache" in reads:
            ids = [r.replica_id for r in replicas]
            hits = routing.prefix_hits(self.prefix_index, request.prefix_hashes, ids)
        if "paces" in reads:  # prefix affinity, and the prefill scorer
            ids = [r.replica_id for r in replicas]
            paces = self.paces.paces(ids, now_s=now, asking=request.request_id)
        snapshot = routing.RouteSnapshot(
            now,
            request,
            replicas,
            hits,
            self.version_weights,
            paces,
            self.paces.holding_since(request.request_id),
        )
        decision, state = routing.decide(policy.plan, snapshot, policy.state)
        if self.log is not NO_LOG:
            self._record("route", snapshot, policy.state, decision)
        policy.state = state
        if decision.replica_id is None:
            if decision.wait_for is not None:
                self.paces.waits(request.request_id, decision.wait_for, now)
            return decision
        if "prefix_cache" in reads:
            routing.observe(policy.plan, request, decision, self.prefix_index)
        record = self.registry.take_slot(decision.replica_id)
        if decision.load_adapter is not None:
            # Others follow while it loads.
            self.registry.add_adapter(record.replica_id, decision.load_adapter)
        self.decisions_by_reason[(decision.policy, decision.reason_code)] += 1
        tokens = routing.computed_tokens(self.deployment.routing.prefix_cache, request, decision)
        self.paces.placed(record.replica_id, request.request_id, tokens, now_s=now)
        # Positional: request, replica, url, decision, queue wait, released, placed, tokens.
        return Lease(request, record.replica_id, record.url, decision, 0.0, False, now, tokens)

    async def acquire(
        self, request: RequestView, *, exclude: frozenset[str] = frozenset()
    ) -> Lease:
        """A slot for ``request``: at once when free and nobody waits ahead of it, else after
        waiting in the queue (priority, then FIFO) until its deadline or the queue timeout."""
        lease = self.place_now(request, exclude=exclude)
        if lease is not None:
            return lease
        return await self.wait_for_slot(request, exclude=exclude)

    def place_now(
        self, request: RequestView, *, exclude: frozenset[str] = frozenset()
    ) -> Lease | None:
        """``acquire``'s first step: a slot at once when one is free and nobody waits ahead of
        ``request``; None otherwise (then ``wait_for_slot``, and nothing else, gets it one)."""
        if self.queue_state.entries:
            return None
        now = self.clock.now()
        avoid = _NONE  # not frozenset[str](): the alias costs a call and a caught error
        if exclude:
            snapshot = admission.ExclusionSnapshot(now, exclude, self.registry.records())
            excluded = admission.exclusion(snapshot)
            self._record("admission", snapshot, None, excluded)
            avoid = excluded.avoid
        lease = self._place(request, avoid, now)
        return lease if isinstance(lease, Lease) else None

    async def wait_for_slot(
        self, request: RequestView, *, exclude: frozenset[str] = frozenset()
    ) -> Lease:
        """``acquire``'s second step, after ``place_now`` gave nothing: admission to the queue,
        then the wait for a slot."""
        now = self.clock.now()
        q = self.deployment.queueing
        rid = request.request_id
        startable = len(self.registry) > 0 or bool(self.cold_listeners)
        snapshot = admission.OfferSnapshot(
            now, rid, request.priority, request.deadline_s, exclude, self._routable(now), startable
        )
        decision, state = admission.offer(q, snapshot, self.queue_state)
        self._record("admission", snapshot, self.queue_state, decision)
        self.queue_state = state
        if not decision.admitted:
            status = decision.status or 429
            raise AdmissionError(
                status, decision.reason_code, decision.reason, decision.retry_after_s
            )
        if decision.shed is not None:
            why = "shed by a higher-priority request"
            self._refuse(decision.shed.request_id, 429, "shed", why, q.retry_after_s)
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = _Waiter(request, future)
        self.dispatch()
        if not future.done():
            for wait_listener in self.wait_listeners:
                wait_listener(request)
        if decision.cold_hold:
            for listener in self.cold_listeners:
                listener()
        try:
            # Held, not failed, while replicas cold-start: the hold may outlast the queue timeout.
            lease = await asyncio.wait_for(asyncio.shield(future), decision.wait_s)
        except TimeoutError:
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()  # granted at the same instant
            raise self._give_up(rid) from None
        except asyncio.CancelledError:
            self._forget(rid)
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result(), outcome="aborted")
            raise
        lease.queue_wait_s = self.clock.now() - now
        return lease

    def _give_up(self, request_id: str) -> AdmissionError:
        self._waiters.pop(request_id, None)
        self.paces.gone(request_id)
        now = self.clock.now()
        snapshot = admission.GiveUpSnapshot(
            now, request_id, self._routable(now), self.starting_count()
        )
        decision, state = admission.give_up(self.deployment.queueing, snapshot, self.queue_state)
        self._record("admission", snapshot, self.queue_state, decision)
        self.queue_state = state
        status = decision.status or 504
        return AdmissionError(status, decision.reason_code, decision.reason, decision.retry_after_s)

    def _routable(self, now: float) -> int:
        return sum(1 for r in self.registry.records() if r.routable(now))

    def cold(self) -> bool:
        """No replica can take a request now (scaled to zero, or all still starting). Asked per
        streamed request: stops at the first routable replica."""
        now = self.clock.now()
        return not any(r.routable(now) for r in self.registry.records())

    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self.queue_state)

    def oldest_wait_s(self, now: float) -> float:
        """How long the longest-queued request has waited at ``now`` (0 when none waits)."""
        return max((now - e.enqueued_s for e in self.queue_state.entries), default=0.0)

    def starting_count(self) -> int:
        return self.registry.count(ReplicaState.STARTING)

    def _forget(self, request_id: str) -> None:
        self.queue_state = self.queue_state.without(request_id)
        self._waiters.pop(request_id, None)
        self.paces.gone(request_id)

    def _refuse(
        self, request_id: str, status: int, code: str, reason: str, retry_after_s: int | None
    ) -> None:
        waiter = self._waiters.pop(request_id, None)
        self.queue_state = self.queue_state.without(request_id)
        self.paces.gone(request_id)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(AdmissionError(status, code, reason, retry_after_s))

    def dispatch(self) -> None:
        """Hand free slots to waiters, best first, as ``policy.admission.dispatch`` names them;
        one that routing cannot place now does not hold back those behind it."""
        if not self.queue_state.entries:
            return
        now = self.clock.now()
        tried: set[str] = set()
        held: int | None = None  # best priority of a waiter holding out for its cache holder
        while True:
            snapshot = admission.DispatchSnapshot(
                now, self.registry.records(), frozenset(tried), held
            )
            decision, state = admission.dispatch(
                self.deployment.queueing, snapshot, self.queue_state
            )
            self._record("admission", snapshot, self.queue_state, decision)
            self.queue_state = state
            for gone in decision.expired:
                self._refuse(
                    gone.request_id, 504, "deadline", "the deadline passed while queued", None
                )
            if decision.entry is None:
                return
            rid = decision.entry.request_id
            waiter = self._waiters.get(rid)
            if waiter is None or waiter.future.done():
                self._forget(rid)  # its request went away
                continue
            lease = self._place(waiter.request, decision.avoid, now)
            if not isinstance(lease, Lease):
                tried.add(rid)
                if lease.wait_for is not None:
                    p = waiter.request.priority
                    held = p if held is None else min(held, p)
                continue
            self._forget(rid)
            waiter.future.set_result(lease)

    def release(self, lease: Lease, *, outcome: str, why: str = "") -> Ejection | None:
        """Give a slot back. ``outcome``: "ok", "failed" (counts toward ejection),
        "client_error" (a 4xx: logged, counts for nothing) or "aborted"."""
        if lease.released:
            return None
        lease.released = True
        for listener in self.outcome_listeners:
            listener(lease, outcome)
        ejection = None
        now = self.clock.now() if outcome in ("ok", "failed", "client_error") else 0.0
        if outcome == "ok":
            self.completed += 1
            self.service_s += now - lease.placed_s
        service_s = now - lease.placed_s if outcome == "ok" else None
        self.paces.done(
            lease.replica_id,
            lease.request.request_id,
            service_s,
            now_s=now if outcome in ("ok", "failed", "client_error") else self.clock.now(),
        )
        record = self.registry.give_slot(lease.replica_id)
        if record is not None and outcome in ("ok", "failed", "client_error"):
            kind: reliability.Outcome = (
                "ok"
                if outcome == "ok"
                else "client_error"
                if outcome == "client_error"
                else "failed"
            )
            snapshot = reliability.OutcomeSnapshot(
                now,
                lease.replica_id,
                kind,
                len(self.registry),
                why,
            )
            cfg = self.deployment.outlier
            decision, state = reliability.decide_outlier(cfg, snapshot, self.outlier_state)
            self._record("outlier", snapshot, self.outlier_state, decision)
            self.outlier_state = state
            ejection = decision.ejection
            if ejection is not None:
                self.ejections.append(ejection)
                self.registry.eject(lease.replica_id, ejection.until_s)
        self.dispatch()
        return ejection

    def first_token(self, lease: Lease, at_s: float | None = None) -> None:
        """The replica sent the lease's first token (at ``at_s``, default now): its prompt is
        off that replica's backlog."""
        if not lease.prefilled and not lease.released:
            lease.prefilled = True
            now = self.clock.now() if at_s is None else at_s
            self.paces.prefilled(lease.replica_id, lease.request.request_id, now_s=now)

    def answered(
        self, lease: Lease, *, ttft_s: float | None, tpot_s: float | None, slo_met: bool
    ) -> None:
        """A 2xx answer ended: its TTFT and TPOT (streams) and whether it met the SLO."""
        for listener in self.answer_listeners:
            listener(lease, ttft_s, tpot_s, slo_met)

    # ----- retries --------------------------------------------------------------------------
    def on_request(self, prompt_tokens: int | None = None) -> None:
        """A request arrived (once per request, before its first attempt): it earns the retry
        budget its share and counts as an arrival for the autoscaler, its prompt's prefill
        (``prompt_tokens`` at the replicas' measured pace) as prefill demand."""
        self.arrivals += 1
        if prompt_tokens:
            self.prefill_s += prompt_tokens * self.paces.fleet_prefill_s_per_token()
        self.budget = reliability.deposit(self.deployment.retries, self.clock.now(), self.budget)

    def may_retry(self, attempt: int, *, status: int | None = None) -> bool:
        """Another attempt after ``attempt`` tries, if attempts and the budget allow; never
        for a replica's 4xx ``status`` (the client's error)."""
        snapshot = reliability.RetrySnapshot(self.clock.now(), attempt, status)
        decision, state = reliability.decide_retry(self.deployment.retries, snapshot, self.budget)
        self._record("retry_budget", snapshot, self.budget, decision)
        self.budget = state
        return decision.allowed

    # ----- status ---------------------------------------------------------------------------
    def ready_count(self) -> int:
        return self._routable(self.clock.now())

    def total_capacity(self) -> int:
        return sum(r.max_concurrency for r in self.registry.records())

    def retry_after_hint_s(self) -> int:
        return max(1, math.ceil(self.deployment.queueing.retry_after_s))
