"""The live autoscaler of one deployment: samples load, asks the pure policy, applies the answer.

Owns the loop (``run``: a tick every ``tick_interval_s`` on its own ``Clock``, at once when the
router reports a request waiting with no ready replica), the policy's state between ticks, the
drains in progress, crash restarts with back-off, cold-start accounting and the last decisions
for ``shipit status``. One tick: reap replicas whose process died, stop drained replicas,
record cold starts that finished, build an ``AutoscalingSnapshot`` from the router's in-flight
and queued counts, call ``decide``, start replicas, cordon the ones chosen to stop (the router
sends them nothing new; they are stopped once their in-flight count reaches zero, so no
in-flight request is cut), and replace replicas that never became ready.

It must not decide how many replicas to run (``policy.autoscaling`` does), must not know how
replicas run (a ``ReplicaPool`` does: ``backends.Fleet``), and does HTTP only through the
injected startup probe. The router and this loop must share one clock: replica state times
come from the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig
from shipit.core.clock import Clock
from shipit.core.fleet import ReplicaState
from shipit.policy.autoscaling import (
    AutoscalingSnapshot,
    AutoscalingState,
    ReplicaLoad,
    ReplicaPhase,
    ScaleDecision,
    decide,
)
from shipit.services.router import RouterService
from shipit.telemetry.instruments import ControlPlaneMetrics

log = logging.getLogger("shipit.autoscaler")

StartupProbe = Callable[[str], Awaitable[Mapping[str, Any] | None]]
_PHASE = {
    ReplicaState.STARTING: ReplicaPhase.STARTING,
    # Not serving: counted like a starting replica, stopped first, replaced when it stays so.
    ReplicaState.UNHEALTHY: ReplicaPhase.STARTING,
    ReplicaState.READY: ReplicaPhase.READY,
    ReplicaState.DRAINING: ReplicaPhase.DRAINING,
}
_METRIC_STATE = {
    ReplicaState.STARTING: "starting",
    ReplicaState.READY: "ready",
    ReplicaState.DRAINING: "draining",
    ReplicaState.UNHEALTHY: "failed",
}
CRASH_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)


def effective_config(deployment: DeploymentConfig) -> AutoscalingConfig | None:
    """What the loop runs on: the ``autoscaling:`` block; for a fixed fleet of local replicas
    ``min = max = replicas`` (the same loop then only restarts crashed replicas and replaces
    ones that never become ready); nothing for a deployment of external endpoints only."""
    if deployment.autoscaling is not None:
        return deployment.autoscaling
    if deployment.replicas == 0:
        return None
    n = deployment.replicas
    return AutoscalingConfig(
        min_replicas=n, max_replicas=n, startup_timeout_s=deployment.startup_timeout_s
    )


class ReplicaPool(Protocol):
    """Where one deployment's replicas run, as the autoscaler drives them."""

    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        """Start ``count`` replicas, registered with the router as starting; their ids."""
        ...

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        """Stop one (it drains what it still has, then exits) and unregister it."""
        ...

    def managed(self, deployment: str) -> list[str]:
        """The replicas this pool started and may stop (external endpoints are not)."""
        ...

    def alive(self, deployment: str, replica_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One decision that changed something, as ``shipit status`` shows it."""

    at_s: float  # the autoscaler's clock
    at_unix_s: float
    target: int
    current: int
    reason: str
    panic: bool = False
    started: tuple[str, ...] = ()
    stopping: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Start requested to ready, in phases (the replica's own, plus ``health``: the spawn and
    the time until the gateway's health probe saw it ready)."""

    replica_id: str
    total_s: float
    phases_s: tuple[tuple[str, float], ...]
    weights_source: str | None
    at_unix_s: float


class Autoscaler:
    def __init__(
        self,
        router: RouterService,
        pool: ReplicaPool,
        config: AutoscalingConfig,
        *,
        clock: Clock,
        metrics: ControlPlaneMetrics | None = None,
        probe: StartupProbe | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.name = router.deployment.name
        self.pool = pool
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.probe = probe
        self.wall = wall
        self.state = AutoscalingState()
        self.last: ScaleDecision | None = None
        self.last_reason = ""  # the decision's reason, plus what the loop held back
        self.events: deque[ScaleEvent] = deque(maxlen=config.decisions_kept)
        self.cold_starts: deque[ColdStart] = deque(maxlen=config.decisions_kept)
        self.draining: dict[str, float] = {}  # replica id -> cordoned at
        self._pending: dict[str, float] = {}  # replica id -> start requested at
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._seen: set[str] = set()
        self._crashes = 0
        self._starts_held_until_s = 0.0
        self._wake = asyncio.Event()
        router.cold_listeners.append(self._wake.set)

    # ----- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # a bug in one tick must not stop autoscaling
                log.exception("autoscaler tick for %s failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_interval_s)

    async def tick(self) -> ScaleDecision:
        now = self.clock.now()
        self._reap_crashed(now)
        self._finish_drains(now)
        await self._account_cold_starts()
        decision, self.state = decide(self.config, self.snapshot(now), self.state)
        await self._apply(decision, now)
        self.last = decision
        self._publish(decision)
        return decision

    async def close(self) -> None:
        """Wait for the stops in progress (each bounded by its drain timeout)."""
        await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    def snapshot(self, now: float) -> AutoscalingSnapshot:
        managed = set(self.pool.managed(self.name))
        loads = tuple(
            ReplicaLoad(r.replica_id, _PHASE[r.state], r.in_flight, r.state_since_s)
            for r in self.router.registry.records()
            if r.replica_id in managed and r.state in _PHASE
        )
        return AutoscalingSnapshot(now, loads, self.router.queued())

    # ----- applying a decision --------------------------------------------------------------
    async def _apply(self, decision: ScaleDecision, now: float) -> None:
        for rid in decision.replace:
            log.warning("%s: replica %s never became ready; replacing it", self.name, rid)
            self._stop(rid)
        started: list[str] = []
        reason = decision.reason
        if decision.delta > 0:
            if now < self._starts_held_until_s:
                wait_s = self._starts_held_until_s - now
                reason += f"; start held back {wait_s:.0f}s after a crash"
            else:
                started = await self.pool.start_replicas(self.name, decision.delta)
                self._pending.update(dict.fromkeys(started, now))
                self._seen.update(started)
        for rid in decision.stop:
            self._cordon(rid, now)
        self.last_reason = reason
        if started or decision.stop or decision.replace:
            self._record(decision, now, reason, tuple(started))

    def _record(
        self, decision: ScaleDecision, now: float, reason: str, started: tuple[str, ...]
    ) -> None:
        event = ScaleEvent(
            at_s=now,
            at_unix_s=self.wall(),
            target=decision.target,
            current=decision.current,
            reason=reason,
            panic=decision.panic,
            started=started,
            stopping=decision.stop,
            replaced=decision.replace,
        )
        self.events.append(event)
        direction = "up" if decision.target > decision.current else "down"
        if decision.target != decision.current and self.metrics is not None:
            self.metrics.scale_events.labels(deployment=self.name, direction=direction).inc()
        log.info("%s: scale %d -> %d (%s)", self.name, decision.current, decision.target, reason)

    def _cordon(self, replica_id: str, now: float) -> None:
        """No new requests from now on; stopped once its in-flight requests are done."""
        self.router.set_state(replica_id, ReplicaState.DRAINING)
        self.draining.setdefault(replica_id, now)
        self._pending.pop(replica_id, None)

    def _finish_drains(self, now: float) -> None:
        timeout_s = self.router.deployment.drain_timeout_s
        for rid, since in list(self.draining.items()):
            record = self.router.registry.get(rid)
            if record is None or record.in_flight == 0 or now - since >= timeout_s:
                if record is not None and record.in_flight:
                    log.warning(
                        "%s: %s still has %d in flight after %.0fs; the replica drains them",
                        self.name,
                        rid,
                        record.in_flight,
                        timeout_s,
                    )
                del self.draining[rid]
                self._stop(rid)

    def _stop(self, replica_id: str) -> None:
        if replica_id in self._stopping:
            return
        self.router.set_state(replica_id, ReplicaState.DRAINING)
        self._pending.pop(replica_id, None)
        task = asyncio.ensure_future(self.pool.stop_replica(self.name, replica_id))
        self._stopping[replica_id] = task
        task.add_done_callback(lambda _: self._stopping.pop(replica_id, None))

    def _reap_crashed(self, now: float) -> None:
        for rid in self.pool.managed(self.name):
            if rid in self._stopping or self.pool.alive(self.name, rid):
                continue
            self._crashes += 1
            backoff_s = CRASH_BACKOFF_S[min(self._crashes, len(CRASH_BACKOFF_S)) - 1]
            self._starts_held_until_s = now + backoff_s
            log.warning(
                "%s: replica %s exited unexpectedly; a replacement starts in %.0fs",
                self.name,
                rid,
                backoff_s,
            )
            self.draining.pop(rid, None)
            self._stop(rid)

    # ----- cold starts ----------------------------------------------------------------------
    async def _account_cold_starts(self) -> None:
        for rid in self.pool.managed(self.name):
            record = self.router.registry.get(rid)
            if rid not in self._seen and record is not None:
                self._seen.add(rid)
                if record.state is ReplicaState.STARTING:  # started before us (initial fleet)
                    self._pending.setdefault(rid, record.state_since_s)
        for rid, requested_s in list(self._pending.items()):
            record = self.router.registry.get(rid)
            if record is None:
                del self._pending[rid]
            elif record.state is ReplicaState.READY:
                del self._pending[rid]
                self._crashes = 0
                total_s = max(record.state_since_s - requested_s, 0.0)
                report = await self._probe(record.url)
                self._cold_start_done(rid, total_s, report)

    async def _probe(self, url: str) -> Mapping[str, Any] | None:
        if self.probe is None:
            return None
        try:
            return await self.probe(url)
        except Exception:  # the numbers are nice to have; the replica is ready regardless
            log.debug("startup probe of %s failed", url, exc_info=True)
            return None

    def _cold_start_done(
        self, replica_id: str, total_s: float, report: Mapping[str, Any] | None
    ) -> None:
        reported: dict[str, float] = {}
        source = None
        if report is not None:
            raw = report.get("phases_s", {})
            if isinstance(raw, Mapping):
                reported = {str(k): float(v) for k, v in raw.items()}
            source = report.get("weights_source")
        phases = {**reported, "health": max(total_s - sum(reported.values()), 0.0)}
        cold = ColdStart(
            replica_id=replica_id,
            total_s=round(total_s, 4),
            phases_s=tuple((k, round(v, 4)) for k, v in phases.items()),
            weights_source=str(source) if source is not None else None,
            at_unix_s=self.wall(),
        )
        self.cold_starts.append(cold)
        if self.metrics is not None:
            self.metrics.cold_start.labels(deployment=self.name).observe(total_s)
            for phase, seconds in phases.items():
                self.metrics.cold_start_phase.labels(deployment=self.name, phase=phase).observe(
                    seconds
                )
        detail = ", ".join(f"{k} {v:.2f}s" for k, v in phases.items())
        log.info("%s: cold start of %s: %.2fs (%s)", self.name, replica_id, total_s, detail)

    # ----- reporting ------------------------------------------------------------------------
    def _publish(self, decision: ScaleDecision) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.replicas_desired.labels(deployment=self.name).set(decision.target)
        counts = dict.fromkeys(("starting", "ready", "draining", "failed"), 0)
        managed = set(self.pool.managed(self.name))
        for r in self.router.registry.records():
            if r.replica_id in managed and r.state in _METRIC_STATE:
                counts[_METRIC_STATE[r.state]] += 1
        for state, n in counts.items():
            m.replicas.labels(deployment=self.name, state=state).set(n)
        held = self.router.queued() if self.router.cold() else 0
        m.requests_held.labels(deployment=self.name).set(held)

    def status(self) -> dict[str, Any]:
        """For ``/shipit/status``: bounds, the latest decision, the recent ones, cold starts."""
        c = self.config
        last = self.last
        return {
            "min_replicas": c.min_replicas,
            "max_replicas": c.max_replicas,
            "target_concurrency": c.target_concurrency,
            "desired": last.target if last else None,
            "current": last.current if last else None,
            "panic": last.panic if last else False,
            "reason": self.last_reason if last else None,
            "draining": sorted(self.draining),
            "decisions": [asdict(e) for e in reversed(self.events)],
            "cold_starts": [
                {**asdict(s), "phases_s": dict(s.phases_s)} for s in reversed(self.cold_starts)
            ],
        }
