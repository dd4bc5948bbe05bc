"""The simulator's calls into the live policy code: every decision the fleet simulator takes goes
through one small function here, and is recorded in a ``DecisionLog`` as the live drivers do.

Routing (``policy.routing.decide`` on a composed plan over ``ReplicaRecord`` snapshots, after
``policy.admission.exclusion``: avoid replicas that already failed this request unless nothing
else is routable), admission (``policy.admission.offer`` on a frozen queue: priorities,
deadlines, shedding, queue full; the router's hold: ``cold_start_hold_s`` while no replica is
ready, else ``queue_timeout_s``), retries (``policy.reliability.decide_retry``: the budget and
``max_attempts``), outlier ejection (``decide_outlier``), health (``policy.health.decide`` on
each probe), crashes, never-ready replicas and drains (``policy.lifecycle.decide``), and
autoscaling (``policy.autoscaling.decide``). The fleet simulator (``sim.fleet``: the clock and
the replicas; ``sim.gateway``: the requests) never calls policy code itself, so switching to new
policy APIs happens here alone. The policies' states live in the small holders below
(``SimRoute``, ``SimQueue``, ``SimBudget``, ``SimOutliers``), replaced on every decision as the
live router replaces its own. No clock, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import (
    DeploymentConfig,
    HealthCheckConfig,
    OutlierConfig,
    QueueingConfig,
    RetryConfig,
)
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy import admission, autoscaling, health, lifecycle, reliability, routing
from shipit.policy.admission import AdmissionDecision, QueueEntry, QueueState
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, ScaleDecision
from shipit.policy.health import HealthDecision, HealthSnapshot, HealthState
from shipit.policy.lifecycle import (
    LifecycleConfig,
    LifecycleDecision,
    LifecycleSnapshot,
    LifecycleState,
)
from shipit.policy.reliability import Ejection, OutlierState, RetryBudgetState
from shipit.policy.routing import PaceBook, PrefixIndex, RouteDecision, RoutePlan, RoutingState


# ----- the policies' states, as the simulator holds them ----------------------------------------
@dataclass(slots=True)
class SimRoute:
    """One composed routing policy: its plan, its current state, its prefix index."""

    plan: RoutePlan
    state: RoutingState
    index: PrefixIndex


RoutingPolicy = SimRoute  # what sim.gateway keeps per policy name


@dataclass(slots=True)
class SimQueue:
    """The admission queue: its config and its current frozen state."""

    config: QueueingConfig
    state: QueueState = field(default_factory=QueueState)

    def __len__(self) -> int:
        return len(self.state)

    @property
    def max_queue(self) -> int:
        return self.config.max_queue

    def entries(self) -> tuple[QueueEntry, ...]:
        return self.state.entries

    def remove(self, request_id: str) -> None:
        self.state = self.state.without(request_id)


@dataclass(slots=True)
class SimBudget:
    config: RetryConfig
    state: RetryBudgetState

    @property
    def balance(self) -> float:
        return self.state.balance


@dataclass(slots=True)
class SimOutliers:
    config: OutlierConfig
    state: OutlierState = field(default_factory=OutlierState)


# ----- routing --------------------------------------------------------------------------------
def routing_policy(
    deployment: DeploymentConfig, name: str | None = None, *, kv_blocks: int | None = None
) -> SimRoute:
    """A fresh routing policy, as the router composes one per name; ``kv_blocks``: the KV
    capacity every simulated replica reports, which sizes the prefix index as live."""
    r = deployment.routing
    plan = routing.plan_for(name or r.policy, r)
    index = PrefixIndex(max_blocks_per_replica=kv_blocks or r.prefix_cache.max_blocks_per_replica)
    return SimRoute(plan, RoutingState(), index)


def exclusion(
    replicas: Sequence[ReplicaRecord],
    exclude: frozenset[str],
    *,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> frozenset[str]:
    """The replicas a retry avoids (those that failed it, unless nothing else is routable),
    logged as the router logs it."""
    snapshot = admission.ExclusionSnapshot(now_s, exclude, tuple(replicas))
    decision = admission.exclusion(snapshot)
    log.record("admission", deployment, snapshot, None, decision)
    return decision.avoid


def place(
    policy: SimRoute,
    request: RequestView,
    replicas: Sequence[ReplicaRecord],
    *,
    avoid: frozenset[str],
    now_s: float,
    deployment: str,
    version_weights: tuple[tuple[str, float], ...] = (),
    paces: PaceBook | None = None,
    log: DecisionLog = NO_LOG,
) -> RouteDecision:
    """One routing decision among the replicas ``request`` need not avoid, as the router's
    ``_place`` takes it; when it names a replica the prefix index is fed. ``paces``: the
    gateway's pace book, read and fed as the router does (read for plans that use paces)."""
    views = tuple(r for r in replicas if r.replica_id not in avoid) if avoid else tuple(replicas)
    hits: tuple[tuple[str, int], ...] = ()
    pace: tuple[routing.ReplicaPace, ...] = ()
    ids = [r.replica_id for r in views]
    if request.prefix_hashes and policy.plan.uses("prefix_cache"):
        hits = routing.prefix_hits(policy.index, request.prefix_hashes, ids)
    if paces is not None and policy.plan.uses("paces"):
        pace = paces.paces(ids, now_s=now_s, asking=request.request_id)
    since = paces.holding_since(request.request_id) if paces is not None else None
    snap = routing.RouteSnapshot(
        now_s, request, views, hits, version_weights, paces=pace, holding_since_s=since
    )
    decision, state = routing.decide(policy.plan, snap, policy.state)
    log.record("route", deployment, snap, policy.state, decision)
    policy.state = state
    if decision.replica_id is not None:
        routing.observe(policy.plan, request, decision, policy.index)
    elif decision.wait_for is not None and paces is not None:
        paces.waits(request.request_id, decision.wait_for, now_s)
    return decision


# ----- admission ------------------------------------------------------------------------------
def admission_queue(queueing: QueueingConfig) -> SimQueue:
    return SimQueue(queueing)


def admit(
    queue: SimQueue,
    request: RequestView,
    *,
    exclude: frozenset[str],
    routable: int,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> AdmissionDecision:
    """Queue a request that found no free slot: admitted (with how long it may wait: the
    cold-start hold while nothing is routable), shed another, or refused."""
    snapshot = admission.OfferSnapshot(
        now_s, request.request_id, request.priority, request.deadline_s, exclude, routable
    )
    decision, state = admission.offer(queue.config, snapshot, queue.state)
    log.record("admission", deployment, snapshot, queue.state, decision)
    queue.state = state
    return decision


def next_waiter(
    queue: SimQueue,
    replicas: Sequence[ReplicaRecord],
    *,
    tried: frozenset[str],
    now_s: float,
    deployment: str,
    held_priority: int | None = None,
    log: DecisionLog = NO_LOG,
) -> admission.DispatchDecision:
    """Expire deadlines and name the next waiter a free slot can take, as the router's
    ``dispatch`` asks ``policy.admission.dispatch``."""
    snapshot = admission.DispatchSnapshot(now_s, tuple(replicas), tried, held_priority)
    decision, state = admission.dispatch(queue.config, snapshot, queue.state)
    log.record("admission", deployment, snapshot, queue.state, decision)
    queue.state = state
    return decision


def give_up(
    queue: SimQueue,
    request_id: str,
    *,
    routable: int,
    starting: int,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> AdmissionDecision:
    """A waiter's wait ran out: 503 when the cold-start hold ran out, else 504."""
    snapshot = admission.GiveUpSnapshot(now_s, request_id, routable, starting)
    decision, state = admission.give_up(queue.config, snapshot, queue.state)
    log.record("admission", deployment, snapshot, queue.state, decision)
    queue.state = state
    return decision


# ----- retries and outliers -------------------------------------------------------------------
def retry_budget(retries: RetryConfig) -> SimBudget:
    return SimBudget(retries, reliability.initial_budget(retries))


def on_request(budget: SimBudget, *, now_s: float) -> None:
    """Every request sent deposits into the retry budget."""
    budget.state = reliability.deposit(budget.config, now_s, budget.state)


def may_retry(
    budget: SimBudget,
    retries: RetryConfig,
    *,
    request_id: str,
    attempt: int,
    now_s: float,
    deployment: str,
    log: DecisionLog = NO_LOG,
) -> reliability.RetryDecision:
    """Another attempt after ``attempt`` failed tries, if attempts and the budget allow."""
    snapshot = reliability.RetrySnapshot(now_s, attempt)
    decision, state = reliability.decide_retry(retries, snapshot, budget.state)
    log.record("retry_budget", deployment, snapshot, budget.state, decision)
    budget.state = state
    return decision


def outlier_detector(deployment: DeploymentConfig) -> SimOutliers:
    return SimOutliers(deployment.outlier)


def outcome(
    outliers: SimOutliers,
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
    snapshot = reliability.OutcomeSnapshot(
        now_s, replica_id, "ok" if ok else "failed", fleet_size, why
    )
    decision, state = reliability.decide_outlier(outliers.config, snapshot, outliers.state)
    log.record("outlier", deployment, snapshot, outliers.state, decision)
    outliers.state = state
    return decision.ejection


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
    now_s: float,
    records: Iterable[ReplicaRecord],
    queued: int,
    *,
    arrivals: int = 0,
    completed: int = 0,
    service_s: float = 0.0,
    oldest_wait_s: float = 0.0,
    first_tokens: tuple[tuple[float, float], ...] = (),
    prefill_s: float = 0.0,
) -> AutoscalingSnapshot:
    """What the live autoscaler shows the policy: the managed replicas' records, the queue
    (its length and its oldest wait), the request counters and the first tokens since the
    last tick (time inside the replica, prefill alone), the arrivals' prefill alone summed."""
    return AutoscalingSnapshot(
        now_s,
        tuple(records),
        queued,
        arrivals,
        completed,
        service_s,
        oldest_wait_s,
        first_tokens,
        prefill_s,
    )


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
