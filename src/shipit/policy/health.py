"""The health policy: what one probe of a replica's ``/health`` changes, with thresholds.

``decide(config, snapshot, state) -> (HealthDecision, state)``: the snapshot is one probe's
outcome (ok, HTTP status, error text) with the replica's record and ``now_s``; the state counts
each replica's consecutive ok and failed probes. A ready replica becomes ``UNHEALTHY`` only
after ``unhealthy_threshold`` failed probes in a row (one refused connection or slow answer is
not an outage); an unhealthy one is ``READY`` again after ``healthy_threshold`` ok probes in a
row; a starting replica is ``READY`` at its first ok probe and stays ``STARTING`` while probes
fail (the lifecycle policy replaces one that never comes up). Probes never change a
``DRAINING`` or ``STOPPED`` replica: a healthy answer must not make a cordoned replica routable.

Pure: no clock, no IO; the monitor (``services.monitor``) probes, calls ``decide`` and applies
the target state through the registry. The simulator drives the same function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shipit.config.gateway import HealthCheckConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState

_CORDONED = (ReplicaState.DRAINING, ReplicaState.STOPPED)


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One ``GET /health``: ``ok`` when it answered 200."""

    ok: bool
    status: int | None = None  # the HTTP status; None when nothing answered
    error: str = ""  # why nothing (usable) came back: refused, timed out...

    @property
    def detail(self) -> str:
        if self.error:
            return self.error
        return f"/health answered {self.status}" if self.status is not None else "no answer"


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    now_s: float
    replica: ReplicaRecord  # as the registry had it when the probe came back
    probe: ProbeOutcome


@dataclass(frozen=True, slots=True)
class ProbeStreak:
    """Consecutive ok / failed probes of one replica (one of the two is always zero)."""

    replica_id: str
    successes: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class HealthState:
    streaks: tuple[ProbeStreak, ...] = ()

    def streak(self, replica_id: str) -> ProbeStreak:
        for s in self.streaks:
            if s.replica_id == replica_id:
                return s
        return ProbeStreak(replica_id)

    def put(self, streak: ProbeStreak) -> HealthState:
        others = tuple(s for s in self.streaks if s.replica_id != streak.replica_id)
        return HealthState((*others, streak))


@dataclass(frozen=True, slots=True)
class HealthDecision:
    replica_id: str
    target: ReplicaState | None  # the state to move the replica to; None: leave it
    reason_code: str  # cordoned, ready, recovered, recovering, healthy, starting,
    #                   probe_failed, unhealthy, still_unhealthy
    reason: str


def probe_wanted(record: ReplicaRecord) -> bool:
    """Whether probing the replica can change anything (cordoned replicas are left alone)."""
    return record.state not in _CORDONED


def resync_wanted(record: ReplicaRecord, probe: ProbeOutcome, state: HealthState) -> bool:
    """Whether to re-read what the replica holds (its adapters) before deciding on an ok probe:
    it is not ready yet, or its previous probe failed (it may have restarted in between
    without ever being marked unhealthy, and come back without its adapters)."""
    if not probe.ok:
        return False
    return record.state is not ReplicaState.READY or state.streak(record.replica_id).failures > 0


def forget(state: HealthState, keep: Iterable[str]) -> HealthState:
    """The state without the streaks of replicas no longer registered."""
    wanted = set(keep)
    return HealthState(tuple(s for s in state.streaks if s.replica_id in wanted))


def decide(
    config: HealthCheckConfig, snapshot: HealthSnapshot, state: HealthState
) -> tuple[HealthDecision, HealthState]:
    record, probe = snapshot.replica, snapshot.probe
    rid = record.replica_id
    if record.state in _CORDONED:
        why = f"{rid} is {record.state.value}: probes do not change it ({probe.detail})"
        return HealthDecision(rid, None, "cordoned", why), state
    before = state.streak(rid)
    if probe.ok:
        streak = ProbeStreak(rid, successes=before.successes + 1)
        decision = _on_ok(config, record, streak, probe)
    else:
        streak = ProbeStreak(rid, failures=before.failures + 1)
        decision = _on_failure(config, record, streak, probe)
    return decision, state.put(streak)


def _on_ok(
    config: HealthCheckConfig, record: ReplicaRecord, streak: ProbeStreak, probe: ProbeOutcome
) -> HealthDecision:
    rid, n, need = record.replica_id, streak.successes, config.healthy_threshold
    if record.state is ReplicaState.STARTING:
        return HealthDecision(rid, ReplicaState.READY, "ready", f"{rid} started: {probe.detail}")
    if record.state is ReplicaState.UNHEALTHY:
        if n >= need:
            why = f"{rid} recovered: {n} ok probe(s) in a row (healthy_threshold {need})"
            return HealthDecision(rid, ReplicaState.READY, "recovered", why)
        why = f"{rid} recovering: {n} of {need} ok probes in a row (healthy_threshold)"
        return HealthDecision(rid, None, "recovering", why)
    return HealthDecision(rid, None, "healthy", f"{rid} healthy: {probe.detail}")


def _on_failure(
    config: HealthCheckConfig, record: ReplicaRecord, streak: ProbeStreak, probe: ProbeOutcome
) -> HealthDecision:
    rid, n, need = record.replica_id, streak.failures, config.unhealthy_threshold
    if record.state is ReplicaState.STARTING:
        why = f"{rid} still starting: {probe.detail}"
        return HealthDecision(rid, None, "starting", why)
    if record.state is ReplicaState.UNHEALTHY:
        why = f"{rid} still unhealthy: {probe.detail} ({n} failed probes in a row)"
        return HealthDecision(rid, None, "still_unhealthy", why)
    if n >= need:
        why = (
            f"{rid} unhealthy: {n} failed probes in a row (unhealthy_threshold {need}), "
            f"last: {probe.detail}"
        )
        return HealthDecision(rid, ReplicaState.UNHEALTHY, "unhealthy", why)
    why = f"{rid} probe failed ({n} of {need} before unhealthy): {probe.detail}"
    return HealthDecision(rid, None, "probe_failed", why)
