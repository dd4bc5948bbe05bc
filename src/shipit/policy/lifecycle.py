"""The lifecycle policy: which started replicas to take away, and when new ones may start.

``decide(config, snapshot, state) -> (LifecycleDecision, state)`` over the replicas shipit
started for one deployment (external endpoints are never in the snapshot):

- **reap** a replica whose process exited without being asked: a crash. Consecutive crashes
  hold back new starts for 1, 2, 4, 8, 16, 30, then 60 s (``CRASH_BACKOFF_S``), so a replica
  that dies while loading is not restarted in a tight loop; the streak ends when a replica
  finishes a cold start. The restart itself is the autoscaling policy's: it sees one replica
  fewer and starts one once the hold (``starts_held_until_s``) has passed.
- **replace** a replica still ``STARTING`` (never ready) or ``UNHEALTHY`` longer than
  ``startup_timeout_s``: it is stopped, and the autoscaling policy, which no longer counts
  it, starts another in the same tick.
- **stop** a ``DRAINING`` replica once it has nothing in flight or its drain timeout passed.

Pure: ``now_s`` comes in the snapshot; the autoscaler (``services.autoscaler``) applies the
steps and holds starts; the simulator drives the same function.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shipit.core.fleet import ReplicaRecord, ReplicaState

CRASH_BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    startup_timeout_s: float  # not ready (or unhealthy) this long after entering the state: replace
    drain_timeout_s: float  # draining this long: stop even with requests in flight
    crash_backoff_s: tuple[float, ...] = CRASH_BACKOFF_S  # hold after the 1st, 2nd... crash


@dataclass(frozen=True, slots=True)
class LifecycleSnapshot:
    now_s: float
    replicas: tuple[ReplicaRecord, ...]  # the replicas shipit started and may stop
    dead: frozenset[str] = frozenset()  # of those, the ones whose process has exited
    stopping: frozenset[str] = frozenset()  # stops already in progress: nothing to decide
    came_up: tuple[str, ...] = ()  # replicas whose cold start finished since the last tick


@dataclass(frozen=True, slots=True)
class LifecycleState:
    crashes: int = 0  # consecutive crashes since a replica last came up
    starts_held_until_s: float | None = None


class LifecycleAction(enum.Enum):
    REAP = "reap"  # exited on its own: unregister it
    REPLACE = "replace"  # stuck: stop it; a new one takes its place
    STOP = "stop"  # drained: stop it


@dataclass(frozen=True, slots=True)
class LifecycleStep:
    replica_id: str
    action: LifecycleAction
    reason_code: str  # crashed, never_ready, unhealthy_too_long, drained, drain_timeout
    reason: str


@dataclass(frozen=True, slots=True)
class LifecycleDecision:
    steps: tuple[LifecycleStep, ...]
    starts_held_until_s: float | None  # no replica may start before this (crash back-off)
    reason_code: str  # the most serious step's code, crash_backoff while held, else steady
    reason: str

    def ids(self, action: LifecycleAction) -> tuple[str, ...]:
        return tuple(s.replica_id for s in self.steps if s.action is action)

    def starts_held(self, now_s: float) -> bool:
        return self.starts_held_until_s is not None and now_s < self.starts_held_until_s


def overdue(record: ReplicaRecord, now_s: float, startup_timeout_s: float) -> str | None:
    """Why a replica should be replaced (``never_ready`` / ``unhealthy_too_long``), or None.
    The autoscaling policy uses the same rule to stop counting such a replica."""
    if now_s - record.state_since_s <= startup_timeout_s:
        return None
    if record.state is ReplicaState.STARTING:
        return "never_ready"
    if record.state is ReplicaState.UNHEALTHY:
        return "unhealthy_too_long"
    return None


def decide(
    config: LifecycleConfig, snapshot: LifecycleSnapshot, state: LifecycleState
) -> tuple[LifecycleDecision, LifecycleState]:
    now = snapshot.now_s
    crashes = 0 if snapshot.came_up else state.crashes
    held_until = state.starts_held_until_s
    steps: list[LifecycleStep] = []
    for r in snapshot.replicas:
        rid = r.replica_id
        if rid in snapshot.stopping:
            continue
        if rid in snapshot.dead:
            crashes += 1
            table = config.crash_backoff_s
            backoff_s = table[min(crashes, len(table)) - 1]
            held_until = now + backoff_s if held_until is None else max(held_until, now + backoff_s)
            why = (
                f"{rid} exited unexpectedly (crash {crashes} in a row); a replacement may "
                f"start in {backoff_s:g}s"
            )
            steps.append(LifecycleStep(rid, LifecycleAction.REAP, "crashed", why))
        elif (step := _stuck(config, r, now) or _drained(config, r, now)) is not None:
            steps.append(step)
    if held_until is not None and now >= held_until:
        held_until = None
    decision = _summary(tuple(steps), held_until, now)
    return decision, LifecycleState(crashes, held_until)


def _stuck(config: LifecycleConfig, r: ReplicaRecord, now: float) -> LifecycleStep | None:
    code = overdue(r, now, config.startup_timeout_s)
    if code is None:
        return None
    age_s = now - r.state_since_s
    what = "not ready" if code == "never_ready" else "unhealthy"
    why = (
        f"{r.replica_id} {what} for {age_s:.0f}s (startup_timeout_s "
        f"{config.startup_timeout_s:g}); replacing it"
    )
    return LifecycleStep(r.replica_id, LifecycleAction.REPLACE, code, why)


def _drained(config: LifecycleConfig, r: ReplicaRecord, now: float) -> LifecycleStep | None:
    if r.state is not ReplicaState.DRAINING:
        return None
    if r.in_flight == 0:
        why = f"{r.replica_id} drained: nothing in flight; stopping it"
        return LifecycleStep(r.replica_id, LifecycleAction.STOP, "drained", why)
    age_s = now - r.state_since_s
    if age_s >= config.drain_timeout_s:
        why = (
            f"{r.replica_id} still has {r.in_flight} in flight after {age_s:.0f}s "
            f"(drain_timeout_s {config.drain_timeout_s:g}); stopping it, the replica drains them"
        )
        return LifecycleStep(r.replica_id, LifecycleAction.STOP, "drain_timeout", why)
    return None


_SEVERITY = ("crashed", "never_ready", "unhealthy_too_long", "drain_timeout", "drained")


def _summary(
    steps: tuple[LifecycleStep, ...], held_until: float | None, now: float
) -> LifecycleDecision:
    reasons = [s.reason for s in steps]
    if held_until is not None:
        reasons.append(f"starts held back {held_until - now:.0f}s after a crash")
    codes = {s.reason_code for s in steps}
    code = next((c for c in _SEVERITY if c in codes), None)
    if code is None:
        code = "crash_backoff" if held_until is not None else "steady"
    reason = "; ".join(reasons) if reasons else "nothing to reap, replace or stop"
    return LifecycleDecision(steps, held_until, code, reason)
