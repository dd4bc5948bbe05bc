"""Replay a recorded run: feed each decision's snapshot and state to the simulator's drivers.

A live ``shipit up --record-decisions FILE`` writes every decision its drivers take with the
snapshot and the state it was taken from (``core.decisions``). ``replay`` hands each entry to
the simulator's driver for that policy (``sim.drivers``: the same functions the fleet
simulator calls) with the deployment's settings, and compares what comes back with what was
recorded: the decision, and, for policies whose state only the policy changes, the state the
next decision of the same deployment started from. Any difference is a ``Mismatch``. An entry
for a policy the simulator has no driver for is counted as ``unknown``, never skipped quietly.

Pure: the caller reads the file (``core.decisions.read_entries``) and the settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import LogEntry
from shipit.policy import admission, pool_choice, reliability, replica_faults, routing
from shipit.policy.autoscaling.settings import effective_config, lifecycle_config
from shipit.sim import drivers

Replayer = Callable[[DeploymentConfig, Any, Any], tuple[Any, Any]]


def _health(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    return drivers.health_check(d.health, snapshot, state, deployment=d.name)


def _lifecycle(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    return drivers.lifecycle_step(lifecycle_config(d), snapshot, state, deployment=d.name)


def _autoscaling(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    config = effective_config(d)
    if config is None:
        raise ValueError(f"deployment {d.name!r} has no autoscaling settings to replay with")
    return drivers.autoscale(config, snapshot, state, deployment=d.name)


def _route(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    plan = routing.plan_for(snapshot.request.routing or d.routing.policy, d.routing)
    return routing.decide(plan, snapshot, state)


def _admission(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    q = d.queueing
    if isinstance(snapshot, admission.ExclusionSnapshot):
        return admission.exclusion(snapshot), state
    if isinstance(snapshot, admission.OfferSnapshot):
        return admission.offer(q, snapshot, state)
    if isinstance(snapshot, admission.DispatchSnapshot):
        return admission.dispatch(q, snapshot, state)
    if isinstance(snapshot, admission.GiveUpSnapshot):
        return admission.give_up(q, snapshot, state)
    raise ValueError(f"no admission decision takes a {type(snapshot).__name__}")


def _outlier(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    return reliability.decide_outlier(d.outlier, snapshot, state)


def _retry(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    return reliability.decide_retry(d.retries, snapshot, state)


def _pool_choice(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    # A live plane and the fleet simulator both choose with the default settings.
    return pool_choice.decide(pool_choice.PoolChoiceConfig(), snapshot), state


def _replica_faults(d: DeploymentConfig, snapshot: Any, state: Any) -> tuple[Any, Any]:
    # What a live plane decides with (its replicas are pseudo-nodes of their own).
    return replica_faults.decide(replica_faults.LIVE_PLANE, snapshot, state)


REPLAYERS: dict[str, Replayer] = {
    "route": _route,
    "admission": _admission,
    "outlier": _outlier,
    "retry_budget": _retry,
    "health": _health,
    "lifecycle": _lifecycle,
    "autoscaling": _autoscaling,
    "pool_choice": _pool_choice,
    "replica_faults": _replica_faults,
}
# Policies whose state changes only through their own decisions: the state one decision
# returns is exactly the state the next one of the same deployment (and routing plan) starts
# from. Not here: health and outlier states also drop replicas that went away, the queue also
# loses requests whose clients left, and the retry budget also earns a deposit per request.
CHAINED = frozenset({"lifecycle", "autoscaling", "route"})


def _plan_name(e: LogEntry) -> str:
    """Each routing plan (the deployment's, or a per-request override) keeps its own state."""
    request = getattr(e.snapshot, "request", None)
    return (getattr(request, "routing", None) or "") if e.policy == "route" else ""


@dataclass(frozen=True, slots=True)
class Mismatch:
    index: int  # the entry's place in the log
    policy: str
    deployment: str
    what: str  # "decision" or "state"
    recorded: object
    replayed: object


@dataclass(frozen=True, slots=True)
class ReplayReport:
    decisions: int
    by_policy: tuple[tuple[str, int], ...]
    mismatches: tuple[Mismatch, ...]
    unknown: tuple[tuple[str, int], ...]  # entries of policies with no simulator driver

    @property
    def identical(self) -> bool:
        return not self.mismatches and not self.unknown


def replay(
    entries: Iterable[LogEntry],
    deployments: Mapping[str, DeploymentConfig],
    replayers: Mapping[str, Replayer] = REPLAYERS,
) -> ReplayReport:
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    mismatches: list[Mismatch] = []
    next_state: dict[tuple[str, str, str], object] = {}
    for i, e in enumerate(entries):
        counts[e.policy] += 1
        run = replayers.get(e.policy)
        if run is None:
            unknown[e.policy] += 1
            continue
        key = (e.policy, e.deployment, _plan_name(e))
        if e.policy in CHAINED and key in next_state and next_state[key] != e.state:
            mismatches.append(
                Mismatch(i, e.policy, e.deployment, "state", e.state, next_state[key])
            )
        decision, new_state = run(deployments[e.deployment], e.snapshot, e.state)
        next_state[key] = new_state
        if decision != e.decision:
            mismatches.append(Mismatch(i, e.policy, e.deployment, "decision", e.decision, decision))
    return ReplayReport(
        decisions=sum(counts.values()),
        by_policy=tuple(sorted(counts.items())),
        mismatches=tuple(mismatches),
        unknown=tuple(sorted(unknown.items())),
    )
