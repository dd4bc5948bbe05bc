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


REPLAYERS: dict[str, Replayer] = {
    "health": _health,
    "lifecycle": _lifecycle,
    "autoscaling": _autoscaling,
}
# Policies whose state changes only through their own decisions: the state one decision
# returns is exactly the state the next one of the same deployment starts from. (The health
# state also loses the streaks of replicas that went away between probes, so it is not here.)
CHAINED = frozenset({"lifecycle", "autoscaling"})


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
    next_state: dict[tuple[str, str], object] = {}
    for i, e in enumerate(entries):
        counts[e.policy] += 1
        run = replayers.get(e.policy)
        if run is None:
            unknown[e.policy] += 1
            continue
        key = (e.policy, e.deployment)
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
