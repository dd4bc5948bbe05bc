"""The simulator's calls into the live policy code: every decision the fleet simulator takes goes
through one small function here, and is recorded in a ``DecisionLog`` as the live drivers do.

Routing (``policy.routing.build_policy`` objects' ``decide``/``observe`` over ``ReplicaRecord``
snapshots, with the router's failover exclusion: avoid replicas that already failed this request
unless nothing else is routable), admission (``policy.queueing.AdmissionQueue``: priorities,
deadlines, shedding, queue full; the router's hold: ``cold_start_hold_s`` while no replica is
ready, else ``queue_timeout_s``), retries (``RetryBudget`` and ``max_attempts``), outlier
ejection (``OutlierDetector``), health (``policy.health.decide`` on each probe), crashes,
never-ready replicas and drains (``policy.lifecycle.decide``), and autoscaling
(``policy.autoscaling.decide``). The fleet simulator
(``sim.fleet``) owns the clock, the replicas and the requests, and never calls policy code
itself, so switching to new policy APIs happens here alone. No clock, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import (
    DeploymentConfig,
    HealthCheckConfig,
    QueueingConfig,
    RetryConfig,
)
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy import autoscaling, health, lifecycle
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, ScaleDecision
from shipit.policy.health import HealthDecision, HealthSnapshot, HealthState
from shipit.policy.lifecycle import (
    LifecycleConfig,
    LifecycleDecision,
    LifecycleSnapshot,
    LifecycleState,
)
from shipit.policy.queueing import AdmissionDecision, AdmissionQueue, QueueEntry
from shipit.policy.reliability import Ejection, OutlierDetector, RetryBudget
from shipit.policy.routing import RouteDecision, RoutingPolicy, build_policy


# ----- snapshots and decisions the current policy APIs do not define yet ----------------------
@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    now_s: float
    request: RequestView
    replicas: tuple[ReplicaRecord, ...]  # what the policy was shown (after exclusion)
    exclude: frozenset[str]  # replicas that already failed this request


@dataclass(frozen=True, slots=True)
class AdmissionSnapshot:
    now_s: float
    request: RequestView
    waiting: tuple[QueueEntry, ...]
    max_queue: int


@dataclass(frozen=True, slots=True)
class HoldSnapshot:
    now_s: float
    request: RequestView
    cold: bool  # no replica is ready


@dataclass(frozen=True, slots=True)
class HoldDecision:
    """How long a queued request may wait, and what it gets when the wait runs out."""

    timeout_s: float
    status: int  # 503 (the cold-start hold ran out) or 504 (queue timeout or deadline)
    reason_code: str  # "cold_start_hold", "queue_timeout", "deadline"
    reason: str


@dataclass(frozen=True, slots=True)
class ExpirySnapshot:
    now_s: float
    waiting: tuple[QueueEntry, ...]


@dataclass(frozen=True, slots=True)
class ExpiryDecision:
    expired: tuple[str, ...]  # request ids, each answered 504
    reason_code: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetrySnapshot:
    now_s: float
    request_id: str
    attempt: int  # tries so far
    max_attempts: int
    budget_balance: float


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    reason_code: str  # "retry", "max_attempts", "budget_exhausted"
    reason: str


@dataclass(frozen=True, slots=True)
class OutcomeSnapshot:
    now_s: float
    replica_id: str
    ok: bool
    why: str
    fleet_size: int


# ----- routing --------------------------------------------------------------------------------
def routing_policy(deployment: DeploymentConfig, name: str | None = None) -> RoutingPolicy:
    """A fresh routing policy, as the router builds one per name."""
    return build_policy(name or deployment.routing.policy, deployment.routing)


def route(
    policy: RoutingPolicy,
    request: RequestView,
    replicas: Sequence[ReplicaRecord],
    *,
    exclude: frozenset[str],
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> RouteDecision:
    """One routing decision; when it names a replica the policy is told (``observe``)."""
    views = tuple(replicas)
    if exclude:
        others = tuple(r for r in views if r.replica_id not in exclude)
        if any(r.routable(now_s) for r in others):
            views = others
    decision = policy.decide(request, views, now_s)
    log.record("routing", deployment, RouteSnapshot(now_s, request, views, exclude), None, decision)
    if decision.replica_id is not None:
        policy.observe(request, decision)
    return decision


# ----- admission ------------------------------------------------------------------------------
def admission_queue(queueing: QueueingConfig) -> AdmissionQueue:
    return AdmissionQueue(max_queue=queueing.max_queue, retry_after_s=queueing.retry_after_s)


def admit(
    queue: AdmissionQueue,
    request: RequestView,
    *,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> AdmissionDecision:
    """Queue a request that found no free slot: admitted, shed another, or refused."""
    snapshot = AdmissionSnapshot(now_s, request, queue.entries(), queue.max_queue)
    decision = queue.offer(
        request.request_id, priority=request.priority, now_s=now_s, deadline_s=request.deadline_s
    )
    log.record("admission", deployment, snapshot, None, decision)
    return decision


def refusal_status(decision: AdmissionDecision) -> int:
    """The HTTP status the router answers a refused admission with."""
    return 504 if decision.reason_code == "deadline_passed" else 429


def hold(
    queueing: QueueingConfig,
    request: RequestView,
    *,
    cold: bool,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> HoldDecision:
    """How long an admitted request waits for a slot."""
    decision = _hold(queueing, request, cold=cold, now_s=now_s)
    log.record("hold", deployment, HoldSnapshot(now_s, request, cold), None, decision)
    return decision


def _hold(
    queueing: QueueingConfig, request: RequestView, *, cold: bool, now_s: float
) -> HoldDecision:
    """The router's wait rule: held (not failed) up to ``cold_start_hold_s`` while no replica is
    ready, else up to ``queue_timeout_s``; never past the request's deadline."""
    if cold:
        hold_s, status, code = queueing.cold_start_hold_s, 503, "cold_start_hold"
        why = f"no replica is ready: held up to {hold_s:g}s, then 503"
    else:
        hold_s, status, code = queueing.queue_timeout_s, 504, "queue_timeout"
        why = f"every ready replica is busy: waits up to {hold_s:g}s, then 504"
    if request.deadline_s is not None and request.deadline_s - now_s < hold_s:
        left_s = max(request.deadline_s - now_s, 0.0)
        return HoldDecision(left_s, 504, "deadline", f"waits until its deadline, {left_s:g}s")
    return HoldDecision(hold_s, status, code, why)


def hold_ran_out(decision: HoldDecision, *, cold_now: bool) -> tuple[int, str]:
    """The status and reason code a request gets when its wait ends unserved: 503 when the
    cold-start hold ran out and still no replica is ready, else 504."""
    if decision.status == 503 and cold_now:
        return 503, "cold_start"
    return 504, "queue_timeout"


def expire(
    queue: AdmissionQueue, *, now_s: float, deployment: str, log: DecisionLog = NO_LOG
) -> list[QueueEntry]:
    """Entries whose deadline passed while queued (each answered 504)."""
    snapshot = ExpirySnapshot(now_s, queue.entries())
    expired = queue.expire(now_s)
    if expired:
        ids = tuple(e.request_id for e in expired)
        decision = ExpiryDecision(ids, "deadline", "the deadline passed while queued")
        log.record("expiry", deployment, snapshot, None, decision)
    return expired


# ----- retries and outliers -------------------------------------------------------------------
def retry_budget(retries: RetryConfig) -> RetryBudget:
    return RetryBudget(ratio=retries.budget_ratio, min_per_s=retries.budget_min_per_s)


def on_request(budget: RetryBudget, *, now_s: float) -> None:
    """Every request sent deposits into the retry budget."""
    budget.on_request(now_s)


def may_retry(
    budget: RetryBudget,
    retries: RetryConfig,
    *,
    request_id: str,
    attempt: int,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> RetryDecision:
    """Another attempt after ``attempt`` failed tries, if attempts and the budget allow."""
    snapshot = RetrySnapshot(now_s, request_id, attempt, retries.max_attempts, budget.balance)
    if attempt >= retries.max_attempts:
        decision = RetryDecision(False, "max_attempts", f"{attempt} of {attempt} attempts used")
    elif budget.try_retry(now_s):
        decision = RetryDecision(True, "retry", f"attempt {attempt + 1} on another replica")
    else:
        decision = RetryDecision(False, "budget_exhausted", "the retry budget is spent")
    log.record("retry", deployment, snapshot, None, decision)
    return decision


def outlier_detector(deployment: DeploymentConfig) -> OutlierDetector:
    return OutlierDetector(deployment.outlier)


def outcome(
    outliers: OutlierDetector,
    replica_id: str,
    *,
    ok: bool,
    why: str,
    now_s: float,
    fleet_size: int,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> Ejection | None:
    """A request's outcome on a replica: successes reset, failures may eject it."""
    if ok:
        outliers.on_success(replica_id)
        return None
    ejection = outliers.on_failure(replica_id, now_s=now_s, fleet_size=fleet_size, why=why)
    if ejection is not None:
        snapshot = OutcomeSnapshot(now_s, replica_id, ok, why, fleet_size)
        log.record("outlier", deployment, snapshot, None, ejection)
    return ejection


# ----- health and lifecycle -------------------------------------------------------------------
def health_check(
    config: HealthCheckConfig,
    snapshot: HealthSnapshot,
    state: HealthState,
    *,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> tuple[HealthDecision, HealthState]:
    """One probe's outcome through ``policy.health.decide``, as the live monitor calls it."""
    decision, new_state = health.decide(config, snapshot, state)
    log.record("health", deployment, snapshot, state, decision)
    return decision, new_state


def lifecycle_step(
    config: LifecycleConfig,
    snapshot: LifecycleSnapshot,
    state: LifecycleState,
    *,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> tuple[LifecycleDecision, LifecycleState]:
    """Crashes, never-ready replicas and finished drains through ``policy.lifecycle.decide``."""
    decision, new_state = lifecycle.decide(config, snapshot, state)
    log.record("lifecycle", deployment, snapshot, state, decision)
    return decision, new_state


# ----- autoscaling ----------------------------------------------------------------------------
def autoscaling_snapshot(
    now_s: float, records: Iterable[ReplicaRecord], queued: int
) -> AutoscalingSnapshot:
    """What the live autoscaler shows the policy: the managed replicas' records."""
    return AutoscalingSnapshot(now_s, tuple(records), queued)


def autoscale(
    config: AutoscalingConfig,
    snapshot: AutoscalingSnapshot,
    state: AutoscalingState,
    *,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> tuple[ScaleDecision, AutoscalingState]:
    decision, new_state = autoscaling.decide(config, snapshot, state)
    log.record("autoscaling", deployment, snapshot, state, decision)
    return decision, new_state
