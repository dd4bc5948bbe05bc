"""The live autoscaler of one deployment: a thin driver of the lifecycle and autoscaling policies.

Owns the loop (``run``: a tick every ``tick_interval_s`` on its own ``Clock``, at once when the
router reports a request waiting with no ready replica), the policies' states between ticks, the
stops in progress, and the last decisions for ``shipit status``. One tick reads the clock once,
records the cold starts that finished (``services.cold_starts``), builds a ``LifecycleSnapshot``
(the replicas the pool manages, which of them died, which are being stopped) and asks
``policy.lifecycle`` what to reap, replace or stop and whether starts are held (crash back-off);
then builds an ``AutoscalingSnapshot`` from the replicas that remain, the router's queue and its
demand counters (arrivals, completions, their service seconds) and asks ``policy.autoscaling``
how many to run. Both decisions go to the decision log, then to one
applier (``_apply``): stop the replicas named, start replicas unless starts are held, cordon the
ones chosen to stop (the router sends them nothing new; the lifecycle policy stops them once
their in-flight count reaches zero, so no in-flight request is cut).

It must not decide anything itself, must not know how replicas run (a ``ReplicaPool`` does:
``backends.Fleet``), and does HTTP only through the injected startup probe. The router and this
loop must share one clock: replica state times come from the router's registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.clock import Clock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy import autoscaling, lifecycle
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, ScaleDecision
from shipit.policy.autoscaling.settings import effective_config, lifecycle_config
from shipit.policy.lifecycle import (
    LifecycleAction,
    LifecycleDecision,
    LifecycleSnapshot,
    LifecycleState,
)
from shipit.services.cold_starts import ColdStart, ColdStarts, StartupProbe
from shipit.services.router import RouterService
from shipit.telemetry.instruments import ControlPlaneMetrics

logger = logging.getLogger("shipit.autoscaler")

__all__ = ["Autoscaler", "ColdStart", "ReplicaPool", "ScaleEvent", "effective_config"]

_METRIC_STATE = {
    ReplicaState.STARTING: "starting",
    ReplicaState.READY: "ready",
    ReplicaState.DRAINING: "draining",
    ReplicaState.UNHEALTHY: "failed",
}


class ReplicaPool(Protocol):
    """Where one deployment's replicas run, as the autoscaler drives them."""

    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        """Start ``count`` replicas, registered as starting; their ids."""
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
    """One tick that changed something, as ``shipit status`` shows it."""

    at_s: float  # the autoscaler's clock
    at_unix_s: float
    target: int
    current: int
    reason: str
    panic: bool = False
    started: tuple[str, ...] = ()
    stopping: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()


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
        log: DecisionLog = NO_LOG,
    ) -> None:
        self.router = router
        self.name = router.deployment.name
        self.pool = pool
        self.config = config
        self.lifecycle_config = lifecycle_config(router.deployment, config)
        self.clock = clock
        self.metrics = metrics
        self.wall = wall
        self.log = log
        self.state = AutoscalingState()
        self.lifecycle_state = LifecycleState()
        self.cold = ColdStarts(
            self.name,
            kept=config.decisions_kept,
            metrics=metrics,
            probe=probe,
            # A pool that knows where its replicas were placed (Kubernetes: scheduled, image
            # pulled, container started) adds those phases.
            placement=getattr(pool, "cold_start_phases", None),
            wall=wall,
        )
        self.last: ScaleDecision | None = None
        self.last_lifecycle: LifecycleDecision | None = None
        self.last_reason = ""  # the scale decision's reason, plus what the applier held back
        self.events: deque[ScaleEvent] = deque(maxlen=config.decisions_kept)
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        router.cold_listeners.append(self._wake.set)
        # Work waiting outside the router's queue (async job lines) that counts as queued.
        self.extra_demand: Callable[[], int] | None = None
        self.bounds_reason = ""  # who set the bounds at run time (set_bounds), and why

    @property
    def cold_starts(self) -> deque[ColdStart]:
        return self.cold.recent

    # ----- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:  # a bug in one tick must not stop autoscaling
                logger.exception("autoscaler tick for %s failed", self.name)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the event is set, and the loop would go on after being stopped.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.tick_interval_s):
                    await self._wake.wait()

    async def tick(self) -> ScaleDecision:
        now = self.clock.now()
        came_up = await self.cold.account(self._managed())
        life_snap = self.lifecycle_snapshot(now, came_up)
        life_in = self.lifecycle_state
        life, self.lifecycle_state = lifecycle.decide(self.lifecycle_config, life_snap, life_in)
        self.log.record("lifecycle", self.name, life_snap, life_in, life)
        # What the lifecycle decision takes away is not the autoscaler's to count: stuck and
        # dead replicas are replaced in this same tick.
        gone = {step.replica_id for step in life.steps}
        scale_snap = self.snapshot(now, exclude=gone)
        scale_in = self.state
        scale, self.state = autoscaling.decide(self.config, scale_snap, scale_in)
        self.log.record("autoscaling", self.name, scale_snap, scale_in, scale)
        await self._apply(now, life, scale)
        self._publish(scale)
        return scale

    async def close(self) -> None:
        """Wait for the stops in progress (each bounded by its drain timeout)."""
        await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    # ----- snapshots ------------------------------------------------------------------------
    def _managed(self) -> tuple[ReplicaRecord, ...]:
        managed = set(self.pool.managed(self.name))
        return tuple(r for r in self.router.registry.records() if r.replica_id in managed)

    def lifecycle_snapshot(self, now: float, came_up: tuple[str, ...] = ()) -> LifecycleSnapshot:
        records = self._managed()
        stopping = frozenset(self._stopping)
        dead = frozenset(
            r.replica_id
            for r in records
            if r.replica_id not in stopping and not self.pool.alive(self.name, r.replica_id)
        )
        return LifecycleSnapshot(now, records, dead, stopping, came_up)

    def snapshot(self, now: float, *, exclude: set[str] | None = None) -> AutoscalingSnapshot:
        records = tuple(r for r in self._managed() if r.replica_id not in (exclude or ()))
        extra = self.extra_demand() if self.extra_demand is not None else 0
        r = self.router
        return AutoscalingSnapshot(
            now,
            records,
            r.queued() + extra,
            arrivals=r.arrivals,
            completed=r.completed,
            service_s=r.service_s,
            oldest_wait_s=r.oldest_wait_s(now),
            prefill_s=r.prefill_s,
        )

    # ----- applying decisions ---------------------------------------------------------------
    async def _apply(self, now: float, life: LifecycleDecision, scale: ScaleDecision) -> None:
        """The one place a decision changes the fleet: the lifecycle's stops first, then the
        scale decision's starts (unless the crash back-off holds them) and cordons."""
        for step in life.steps:
            level = logging.INFO if step.action is LifecycleAction.STOP else logging.WARNING
            logger.log(level, "%s: %s", self.name, step.reason)
            self._stop(step.replica_id)
        for rid in scale.replace:
            logger.warning("%s: replica %s never became ready; replacing it", self.name, rid)
            self._stop(rid)
        started: list[str] = []
        reason = scale.reason
        if scale.delta > 0:
            held_until = life.starts_held_until_s
            if held_until is not None and life.starts_held(now):
                reason += f"; start held back {held_until - now:.0f}s after a crash"
            else:
                started = await self.pool.start_replicas(self.name, scale.delta)
                self.cold.started(started, now)
        for rid in scale.stop:
            self._cordon(rid)
        self.last, self.last_lifecycle, self.last_reason = scale, life, reason
        replaced = (*life.ids(LifecycleAction.REPLACE), *scale.replace)
        if started or scale.stop or replaced:
            self._record(scale, now, reason, tuple(started), replaced)

    def _record(
        self,
        decision: ScaleDecision,
        now: float,
        reason: str,
        started: tuple[str, ...],
        replaced: tuple[str, ...],
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
            replaced=replaced,
        )
        self.events.append(event)
        direction = "up" if decision.target > decision.current else "down"
        if decision.target != decision.current and self.metrics is not None:
            self.metrics.scale_events.labels(deployment=self.name, direction=direction).inc()
        logger.info("%s: scale %d -> %d (%s)", self.name, decision.current, decision.target, reason)

    def _cordon(self, replica_id: str) -> None:
        """No new requests from now on; the lifecycle policy stops it once it has drained."""
        self.router.set_state(replica_id, ReplicaState.DRAINING)
        self.cold.forget(replica_id)

    def _stop(self, replica_id: str) -> None:
        if replica_id in self._stopping:
            return
        self._cordon(replica_id)
        task = asyncio.ensure_future(self._stop_and_forget(replica_id))
        self._stopping[replica_id] = task
        task.add_done_callback(lambda _: self._stopping.pop(replica_id, None))

    async def _stop_and_forget(self, replica_id: str) -> None:
        await self.pool.stop_replica(self.name, replica_id)
        # The pool has unregistered it; the router also forgets what it learned of it
        # (outlier history, prefix-cache index).
        self.router.remove_replica(replica_id)

    # ----- runtime bounds -------------------------------------------------------------------
    def set_bounds(self, min_replicas: int, max_replicas: int, reason: str) -> None:
        """New ``min_replicas``/``max_replicas`` from now on (the fleet's control plane places
        demand and sets them); validated as the config file's are (``ValueError`` names what
        was wrong). The loop is woken to act on them at once."""
        data = self.config.model_dump(exclude_unset=True)  # what was derived stays derived
        data.update(min_replicas=min_replicas, max_replicas=max_replicas)
        config = AutoscalingConfig.model_validate(data)
        self.config = config
        self.lifecycle_config = lifecycle_config(self.router.deployment, config)
        self.bounds_reason = reason
        logger.info("%s: bounds %d..%d (%s)", self.name, min_replicas, max_replicas, reason)
        self._wake.set()

    # ----- reporting ------------------------------------------------------------------------
    def _publish(self, decision: ScaleDecision) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.replicas_desired.labels(deployment=self.name).set(decision.target)
        counts = dict.fromkeys(("starting", "ready", "draining", "failed"), 0)
        for r in self._managed():
            if r.state in _METRIC_STATE:
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
            # replicas: N without an autoscaling block: the loop only keeps N running
            "fixed": self.router.deployment.autoscaling is None,
            "min_replicas": c.min_replicas,
            "max_replicas": c.max_replicas,
            "target_concurrency": c.target_concurrency,
            "bounds_reason": self.bounds_reason or None,
            "desired": last.target if last else None,
            "current": last.current if last else None,
            "panic": last.panic if last else False,
            "reason": self.last_reason if last else None,
            "draining": sorted(
                r.replica_id
                for r in self._managed()
                if r.state is ReplicaState.DRAINING and r.replica_id not in self._stopping
            ),
            "decisions": [asdict(e) for e in reversed(self.events)],
            "cold_starts": [
                {**asdict(s), "phases_s": dict(s.phases_s)} for s in reversed(self.cold_starts)
            ],
        }
