"""Retry budget and passive outlier ejection: the two rules that keep retries from melting a fleet.

Retry budget (as in Finagle and Envoy): every request deposits ``budget_ratio`` of a retry
(``deposit``), time deposits ``budget_min_per_s``, a retry withdraws one; the balance is
capped, so a failing fleet sees at most ~``budget_ratio`` extra load. ``decide_retry`` says
whether another attempt may go (``max_attempts`` first, then the budget). Outlier ejection
(``decide_outlier``): ``consecutive_failures`` in a row eject a replica for
``base_ejection_s`` x 2^(ejections so far), capped at ``max_ejection_s``, never more than
``max_ejected_fraction`` of the fleet. Both are pure ``decide(config, snapshot, state) ->
(decision, state)`` on frozen records; ``now_s`` comes in the snapshot; every decision carries
a ``reason_code`` and a ``reason``. Nothing here reads a clock or keeps state of its own.

A replica's 4xx answer (400, 404, 413, 422, ...) is the client's fault, not the replica's:
``decide_retry`` never retries it (``client_error_no_retry``, nothing withdrawn from the
budget), ``classify_status`` calls it ``client_error``, and ``decide_outlier`` neither counts
nor resets a failure streak for it. A 5xx and a failure before any status are retried and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from shipit.config.gateway import OutlierConfig, RetryConfig
from shipit.core.frozen import fast_init

# ----- retry budget -----------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class RetryBudgetState:
    balance: float  # retries banked
    last_s: float | None = None  # when time last deposited


@dataclass(frozen=True, slots=True)
class RetrySnapshot:
    now_s: float
    attempt: int  # tries made so far, the first one included
    status: int | None = None  # the replica's HTTP status; None: no answer (connect, timeout)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    allowed: bool
    reason_code: str  # "retry", "client_error_no_retry", "max_attempts", "budget_exhausted"
    reason: str
    balance: float  # retries banked after this decision


def budget_cap(config: RetryConfig) -> float:
    """Most retries the budget banks: a burst after quiet is bounded too."""
    return max(10.0, config.budget_min_per_s)


def initial_budget(config: RetryConfig) -> RetryBudgetState:
    """A fresh budget starts full."""
    return RetryBudgetState(balance=budget_cap(config))


def _refilled(config: RetryConfig, now_s: float, state: RetryBudgetState) -> tuple[float, float]:
    """The balance after time's deposit since ``last_s``, and the new ``last_s``."""
    balance, last = state.balance, state.last_s
    if last is None:
        return balance, now_s
    if now_s > last:
        balance = min(budget_cap(config), balance + (now_s - last) * config.budget_min_per_s)
        return balance, now_s
    return balance, last


def _refill(config: RetryConfig, now_s: float, state: RetryBudgetState) -> RetryBudgetState:
    return RetryBudgetState(*_refilled(config, now_s, state))


def deposit(config: RetryConfig, now_s: float, state: RetryBudgetState) -> RetryBudgetState:
    """A request arrived: it earns ``budget_ratio`` of a retry (state only; no decision)."""
    balance, last = _refilled(config, now_s, state)
    return RetryBudgetState(min(budget_cap(config), balance + config.budget_ratio), last)


def decide_retry(
    config: RetryConfig, snapshot: RetrySnapshot, state: RetryBudgetState
) -> tuple[RetryDecision, RetryBudgetState]:
    """Another attempt after ``snapshot.attempt`` tries, if attempts and the budget allow;
    an allowed retry withdraws one from the budget. A 4xx is never retried: another replica
    would refuse the same request, and the budget is left alone."""
    status = snapshot.status
    if status is not None and 400 <= status < 500:
        why = f"HTTP {status} is the client's error: relayed as is, not retried"
        return RetryDecision(False, "client_error_no_retry", why, state.balance), state
    if status is not None and status < 400:
        why = f"HTTP {status} is an answer, not a failure: nothing to retry"
        return RetryDecision(False, "not_a_failure", why, state.balance), state
    if snapshot.attempt >= config.max_attempts:
        why = f"{snapshot.attempt} of max_attempts {config.max_attempts} tries made"
        return RetryDecision(False, "max_attempts", why, state.balance), state
    state = _refill(config, snapshot.now_s, state)
    if state.balance >= 1.0 - 1e-9:  # ten deposits of 0.1 make one retry
        after = RetryBudgetState(state.balance - 1.0, state.last_s)
        why = f"attempt {snapshot.attempt + 1}; {after.balance:.2f} retries left in the budget"
        return RetryDecision(True, "retry", why, after.balance), after
    why = (
        f"retry budget spent ({state.balance:.2f} banked; earns {config.budget_ratio:g} per "
        f"request and {config.budget_min_per_s:g}/s)"
    )
    return RetryDecision(False, "budget_exhausted", why, state.balance), state


# ----- outlier ejection -------------------------------------------------------------------

Outcome = Literal["ok", "failed", "client_error"]


def classify_status(status: int) -> Outcome:
    """What a replica's answer says of the replica: a 5xx failed, a 4xx is the client's
    error (says nothing of the replica), anything else is ok."""
    if status >= 500:
        return "failed"
    if status >= 400:
        return "client_error"
    return "ok"


@dataclass(frozen=True, slots=True)
class Ejection:
    """A replica taken out of routing until ``until_s`` (what ``RouterService.release`` returns)."""

    replica_id: str
    until_s: float
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class ReplicaOutliers:
    """What outlier detection knows of one replica."""

    replica_id: str
    consecutive_failures: int = 0
    ejections: int = 0  # so far: the next one lasts base x 2^ejections
    ejected_until_s: float | None = None

    def ejected(self, now_s: float) -> bool:
        return self.ejected_until_s is not None and self.ejected_until_s > now_s


@fast_init
@dataclass(frozen=True, slots=True)
class OutlierState:
    replicas: tuple[ReplicaOutliers, ...] = ()

    def get(self, replica_id: str) -> ReplicaOutliers | None:
        return next((r for r in self.replicas if r.replica_id == replica_id), None)

    def put(self, record: ReplicaOutliers) -> OutlierState:
        others = tuple(r for r in self.replicas if r.replica_id != record.replica_id)
        return OutlierState((*others, record))

    def without(self, replica_id: str) -> OutlierState:
        """Forget a replica (it was removed)."""
        return OutlierState(tuple(r for r in self.replicas if r.replica_id != replica_id))


@fast_init
@dataclass(frozen=True, slots=True)
class OutcomeSnapshot:
    now_s: float
    replica_id: str
    outcome: Outcome
    fleet_size: int  # replicas registered in the deployment
    why: str = ""  # what failed (for the reason)


@fast_init
@dataclass(frozen=True, slots=True)
class OutlierDecision:
    replica_id: str
    # "reset", "client_error", "counted", "already_ejected", "fraction_cap", "ejected"
    reason_code: str
    reason: str
    ejection: Ejection | None = None


def decide_outlier(
    config: OutlierConfig, snapshot: OutcomeSnapshot, state: OutlierState
) -> tuple[OutlierDecision, OutlierState]:
    """Count one request's outcome on a replica; eject it when this failure crosses the
    threshold, unless it is already out or the fleet would lose too many. A client error
    changes nothing."""
    rid, now = snapshot.replica_id, snapshot.now_s
    record = state.get(rid)
    if snapshot.outcome == "client_error":
        why = f"a client error ({snapshot.why or '4xx'}): not counted, streak unchanged"
        return OutlierDecision(rid, "client_error", why), state
    if snapshot.outcome == "ok":
        if record is None or record.consecutive_failures == 0:
            return OutlierDecision(rid, "reset", "succeeded"), state
        state = state.put(replace(record, consecutive_failures=0))
        return OutlierDecision(rid, "reset", "succeeded: failure streak reset"), state
    record = record or ReplicaOutliers(rid)
    record = replace(record, consecutive_failures=record.consecutive_failures + 1)
    state = state.put(record)
    streak = f"{record.consecutive_failures} consecutive failures (last: {snapshot.why})"
    if record.consecutive_failures < config.consecutive_failures:
        why = f"{streak}; ejects at {config.consecutive_failures}"
        return OutlierDecision(rid, "counted", why), state
    if record.ejected(now):
        return OutlierDecision(rid, "already_ejected", f"{streak}; already ejected"), state
    ejected = sum(1 for r in state.replicas if r.ejected(now))
    cap = config.max_ejected_fraction * snapshot.fleet_size
    if snapshot.fleet_size <= 0 or ejected + 1 > cap:
        why = (
            f"{streak}; not ejected: {ejected} of {snapshot.fleet_size} already out "
            f"(max_ejected_fraction {config.max_ejected_fraction:g})"
        )
        return OutlierDecision(rid, "fraction_cap", why), state
    duration = min(config.base_ejection_s * (2**record.ejections), config.max_ejection_s)
    until = now + duration
    record = ReplicaOutliers(rid, 0, record.ejections + 1, until)
    reason = f"{streak}; ejected for {duration:g}s"
    return (
        OutlierDecision(rid, "ejected", reason, Ejection(rid, until, reason)),
        state.put(record),
    )
