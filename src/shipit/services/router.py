"""The router service of one deployment: replica registry, admission queue, routing, leases.

Owns the live state the pure policies read (each replica's state, in-flight count, adapters,
replica-side queue and KV use), the ``AdmissionQueue`` and the waiters behind it, the outlier
detector and the retry budget. ``acquire`` returns a ``Lease`` on a replica slot (at once when
one is free and nobody waits ahead, else after waiting in priority order); ``release`` gives it
back with the outcome, which feeds outlier ejection and wakes the next waiter. Time comes from
an injected ``Clock``. It must not do HTTP (the gateway proxies, ``monitor`` probes) and must
not import a web framework.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipit.config.gateway import DeploymentConfig
from shipit.core.clock import Clock
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy.queueing import AdmissionQueue
from shipit.policy.reliability import Ejection, OutlierDetector, RetryBudget
from shipit.policy.routing import PrefixCache, RouteDecision, RoutingPolicy, build_policy
from shipit.services.registry import ReplicaRegistry


class AdmissionError(Exception):
    """The request cannot wait here: ``status`` 429 (queue full, shed) or 504 (deadline)."""

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


@dataclass(slots=True)
class _Waiter:
    request: RequestView
    exclude: frozenset[str]
    future: asyncio.Future[Lease]


class RouterService:
    def __init__(self, deployment: DeploymentConfig, *, clock: Clock) -> None:
        self.deployment = deployment
        self.clock = clock
        q = deployment.queueing
        self.queue = AdmissionQueue(max_queue=q.max_queue, retry_after_s=q.retry_after_s)
        self.outliers = OutlierDetector(deployment.outlier)
        r = deployment.retries
        self.retry_budget = RetryBudget(ratio=r.budget_ratio, min_per_s=r.budget_min_per_s)
        self.registry = ReplicaRegistry(
            deployment.name, clock=clock, max_concurrency=q.max_concurrency
        )
        self.registry.listeners.append(self.dispatch)
        self._policies: dict[str, RoutingPolicy] = {}
        self._waiters: dict[str, _Waiter] = {}
        self.ejections: list[Ejection] = []
        self.decisions_by_reason: Counter[tuple[str, str]] = Counter()
        self.default_policy = deployment.routing.policy
        # Called when a request has to wait and no replica is ready (scale from zero): the
        # autoscaler listens so it need not wait for its next tick.
        self.cold_listeners: list[Callable[[], None]] = []

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
        self.outliers.forget(replica_id)
        prefix = self._policies.get("prefix_cache")
        if isinstance(prefix, PrefixCache):
            prefix.index.forget(replica_id)

    def set_state(self, replica_id: str, state: ReplicaState) -> None:
        self.registry.set_state(replica_id, state)

    def adapter_failed(self, replica_id: str, adapter: str) -> None:
        """Undo the optimistic adapter add of a decision whose adapter load failed."""
        self.registry.drop_adapter(replica_id, adapter)

    def views(self) -> tuple[ReplicaRecord, ...]:
        """Every replica's current record (an ejection that ended no longer blocks routing)."""
        return self.registry.records()

    # ----- routing --------------------------------------------------------------------------
    def policy(self, name: str | None = None) -> RoutingPolicy:
        name = name or self.default_policy
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = build_policy(name, self.deployment.routing)
        return policy

    def apply_kv_events(
        self, replica_id: str, *, stored: list[int], evicted: list[int], reset: bool
    ) -> None:
        """Precise prefix index: what a replica's KV-event feed reported."""
        policy = self.policy("prefix_cache")
        if isinstance(policy, PrefixCache):
            if reset:
                policy.index.forget(replica_id)
            policy.apply_events(replica_id, stored=stored, evicted=evicted)

    def _try_route(self, request: RequestView, exclude: frozenset[str]) -> Lease | None:
        views: Sequence[ReplicaRecord] = self.views()
        if exclude:
            # Avoid replicas that already failed this request, unless nothing else is left.
            now = self.clock.now()
            others = [v for v in views if v.replica_id not in exclude]
            if any(v.routable(now) for v in others):
                views = others
        policy = self.policy(request.routing)
        decision = policy.decide(request, views, self.clock.now())
        if decision.replica_id is None:
            return None
        policy.observe(request, decision)
        record = self.registry.take_slot(decision.replica_id)
        if decision.load_adapter is not None:
            # Others follow while it loads.
            self.registry.add_adapter(record.replica_id, decision.load_adapter)
        self.decisions_by_reason[(decision.policy, decision.reason_code)] += 1
        return Lease(request, record.replica_id, record.url, decision)

    async def acquire(
        self, request: RequestView, *, exclude: frozenset[str] = frozenset()
    ) -> Lease:
        """A slot for ``request``: at once when free and nobody waits ahead of it, else after
        waiting in the queue (priority, then FIFO) until its deadline or the queue timeout."""
        if not self._waiters:
            lease = self._try_route(request, exclude)
            if lease is not None:
                return lease
        return await self._wait(request, exclude)

    async def _wait(self, request: RequestView, exclude: frozenset[str]) -> Lease:
        now = self.clock.now()
        admission = self.queue.offer(
            request.request_id, priority=request.priority, now_s=now, deadline_s=request.deadline_s
        )
        if not admission.admitted:
            status = 504 if admission.reason_code == "deadline_passed" else 429
            raise AdmissionError(
                status, admission.reason_code, admission.reason, admission.retry_after_s
            )
        if admission.shed is not None:
            self._refuse(
                admission.shed.request_id,
                429,
                "shed",
                "shed by a higher-priority request",
                retry_after_s=self.queue.retry_after_s,
            )
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters[request.request_id] = _Waiter(request, exclude, future)
        self.dispatch()
        q = self.deployment.queueing
        cold = self.cold()
        if cold:
            for listener in self.cold_listeners:
                listener()
        # Held, not failed, while replicas cold-start: the hold may outlast the queue timeout.
        hold_s = q.cold_start_hold_s if cold else q.queue_timeout_s
        timeout_s = hold_s
        if request.deadline_s is not None:
            timeout_s = min(hold_s, max(request.deadline_s - now, 0.0))
        try:
            lease = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            self._forget(request.request_id)
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()  # granted at the same instant
            if self.cold() and timeout_s == hold_s:  # the hold ran out, not the deadline
                raise self._cold_error(timeout_s) from None
            raise AdmissionError(
                504, "queue_timeout", f"no replica slot within {timeout_s:g}s", None
            ) from None
        except asyncio.CancelledError:
            self._forget(request.request_id)
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result(), outcome="aborted")
            raise
        lease.queue_wait_s = self.clock.now() - now
        return lease

    def cold(self) -> bool:
        """No replica can take a request now (scaled to zero, or all still starting)."""
        now = self.clock.now()
        return not any(r.routable(now) for r in self.views())

    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self.queue)

    def starting_count(self) -> int:
        return self.registry.count(ReplicaState.STARTING)

    def _cold_error(self, held_s: float) -> AdmissionError:
        q = self.deployment.queueing
        starting = self.starting_count()
        if starting:
            why = (
                f"no replica became ready within {held_s:g}s; {starting} replica(s) starting, "
                f"retry after {q.cold_start_retry_after_s}s"
            )
        else:
            why = (
                f"no replica ready within {held_s:g}s and none starting yet; a replica is "
                f"being started, retry after {q.cold_start_retry_after_s}s"
            )
        return AdmissionError(503, "cold_start", why, q.cold_start_retry_after_s)

    def _forget(self, request_id: str) -> None:
        self.queue.remove(request_id)
        self._waiters.pop(request_id, None)

    def _refuse(
        self,
        request_id: str,
        status: int,
        code: str,
        reason: str,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        waiter = self._waiters.pop(request_id, None)
        self.queue.remove(request_id)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(AdmissionError(status, code, reason, retry_after_s))

    def dispatch(self) -> None:
        """Hand free slots to waiters, best first; one that cannot be placed now (say, only
        replicas it must avoid are free) does not hold back those behind it."""
        for expired in self.queue.expire(self.clock.now()):
            self._refuse(expired.request_id, 504, "deadline", "the deadline passed while queued")
        for entry in self.queue.entries():
            waiter = self._waiters.get(entry.request_id)
            if waiter is None or waiter.future.done():
                self.queue.remove(entry.request_id)
                continue
            lease = self._try_route(waiter.request, waiter.exclude)
            if lease is None:
                if not self._any_free_slot():
                    return
                continue
            self.queue.remove(entry.request_id)
            del self._waiters[entry.request_id]
            waiter.future.set_result(lease)

    def _any_free_slot(self) -> bool:
        now = self.clock.now()
        return any(v.routable(now) and v.free_slots for v in self.views())

    def release(self, lease: Lease, *, outcome: str, why: str = "") -> Ejection | None:
        """Give a slot back. ``outcome``: "ok", "failed" (counts toward ejection) or "aborted"."""
        if lease.released:
            return None
        lease.released = True
        ejection = None
        record = self.registry.give_slot(lease.replica_id)
        if record is not None:
            if outcome == "ok":
                self.outliers.on_success(lease.replica_id)
            elif outcome == "failed":
                ejection = self.outliers.on_failure(
                    lease.replica_id, now_s=self.clock.now(), fleet_size=len(self.registry), why=why
                )
                if ejection is not None:
                    self.ejections.append(ejection)
                    self.registry.eject(lease.replica_id, ejection.until_s)
        self.dispatch()
        return ejection

    # ----- retries --------------------------------------------------------------------------
    def on_request(self) -> None:
        self.retry_budget.on_request(self.clock.now())

    def may_retry(self, attempt: int) -> bool:
        """Another attempt after ``attempt`` tries, if attempts and the budget allow."""
        if attempt >= self.deployment.retries.max_attempts:
            return False
        return self.retry_budget.try_retry(self.clock.now())

    # ----- status ---------------------------------------------------------------------------
    def ready_count(self) -> int:
        now = self.clock.now()
        return sum(1 for v in self.views() if v.routable(now))

    def total_capacity(self) -> int:
        return sum(r.max_concurrency for r in self.registry.records())

    def retry_after_hint_s(self) -> int:
        return max(1, math.ceil(self.deployment.queueing.retry_after_s))
