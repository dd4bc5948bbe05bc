"""Live GPU failures in a fleet plane: drawn at the fleet's rate, or triggered for a drill.

``PlaneGpuFailures`` belongs to a plane's ``services.spot_pools.PlanePools`` (which ticks it and
owns the replicas' pools, the node health state and the events). Every
``spot_check_interval_s`` it draws, for each ready replica, whether one of its GPUs fails in
that interval (``gpu_failures_per_hour`` per GPU, times ``gpus_per_replica``, from a seeded
RNG of its own, so the spot draw is the same with or without it); ``fail`` makes one fail at
once (``POST /shipit/pools/fail``, for drills and tests).

A failure is real: the replica's process is killed with SIGKILL (a GPU that falls off the bus
takes its process down; a backend that cannot kill stops it instead, and the event says so).
What it had in flight is lost there. Detection is immediate: in the same step as the kill the
replica is marked ``unhealthy`` (the router sends it nothing more, as after a health probe's
failure threshold, without the probe's delay); the plane then watches the process exit, the
check the autoscaler's lifecycle makes on each tick, and reports the time from the failure to
that exit (``detected_after_s``). Until it is dealt with, the replica counts as alive to the
autoscaler, so it is not reaped as a crash (no crash back-off) nor replaced twice. Then
``policy.replica_faults.decide`` with the ``GpuFailure``: ``CORDON`` its pseudo-node
``node-<replica>`` (on one machine, bookkeeping only: each replica is its own pseudo-node and
replica ids are not reused, so the cordon is recorded in the status and nothing else
changes), ``STOP`` (unregistered, the router forgets it) and ``REPLACE`` (one more replica, its
pool chosen again). Counted in ``shipit_gpu_failures_total``; the decision goes to the decision
log as ``replica_faults``; the event, with its steps and reasons, to the pools' status. It
decides nothing itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import TYPE_CHECKING, Any

from shipit.core.fleet import ReplicaState
from shipit.policy import replica_faults
from shipit.policy.replica_faults import FaultAction

if TYPE_CHECKING:
    from shipit.services.spot_pools import PlanePools

log = logging.getLogger("shipit.pools")
DETECT_POLL_S = 0.05
DETECT_TIMEOUT_S = 10.0


class PoolError(Exception):
    """A pools drill refused (unknown replica, wrong state); the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PlaneGpuFailures:
    def __init__(self, pools: PlanePools) -> None:
        self.pools = pools
        plane = pools.plane
        self.per_replica_hour = plane.gpu_failures_per_hour * plane.gpus_per_replica
        self.rng = random.Random(f"{plane.spot_seed}:{plane.name}:gpu")
        self.failing: set[str] = set()  # failed, not yet stopped and replaced
        self.failures = 0
        self._last_draw_s: float | None = None

    def draw(self, now_s: float) -> list[tuple[str, str]]:
        """The ready replicas (deployment, id) that lose a GPU since the last draw."""
        last, self._last_draw_s = self._last_draw_s, now_s
        if self.per_replica_hour <= 0 or last is None or now_s <= last:
            return []
        p = 1.0 - math.exp(-self.per_replica_hour * (now_s - last) / 3600.0)
        hit = []
        for name, r in self.pools.records():
            if (
                r.state is ReplicaState.READY
                and r.replica_id in self.pools.labelled
                and not r.external
                and r.replica_id not in self.failing
                and self.rng.random() < p
            ):
                hit.append((name, r.replica_id))
        return hit

    async def tick(self, now_s: float) -> None:
        for deployment, rid in self.draw(now_s):
            await self.handle(deployment, rid, "drawn")

    async def fail(self, replica_id: str, cause: str = "triggered") -> dict[str, Any]:
        """One replica's GPU fails now; ``PoolError`` says why it cannot."""
        records = self.pools.records()
        found = next(((n, r) for n, r in records if r.replica_id == replica_id), None)
        if found is None:
            known = ", ".join(r.replica_id for _, r in records) or "none"
            raise PoolError(
                f"no replica {replica_id!r} in this plane; name one of its replicas: {known}"
            )
        name, record = found
        if record.external:
            raise PoolError(
                f"replica {replica_id} is an external endpoint: this plane does not run it and "
                "cannot fail it; name one of the plane's own replicas"
            )
        if record.state is not ReplicaState.READY or replica_id in self.failing:
            state = "failing" if replica_id in self.failing else record.state.value
            raise PoolError(
                f"replica {replica_id} is {state}; only a ready replica can fail: wait until "
                "it is ready (GET /shipit/status) or name another"
            )
        return await self.handle(name, replica_id, cause)

    async def handle(self, deployment: str, replica_id: str, cause: str) -> dict[str, Any]:
        self.failing.add(replica_id)
        try:
            return await self._fail(deployment, replica_id, cause)
        finally:
            self.failing.discard(replica_id)

    async def _fail(self, deployment: str, replica_id: str, cause: str) -> dict[str, Any]:
        pools = self.pools
        clock = pools.clock
        failed_at = clock.now()
        pid_of = getattr(pools.inner, "pid", None)
        pid = pid_of(replica_id) if callable(pid_of) else None
        log.warning("%s: GPU failure on %s (%s); killing it", deployment, replica_id, cause)
        # Detected at once: the router sends it nothing more from this step on (what a health
        # probe would find after its threshold), so a request retried after the kill waits
        # for a routable replica instead of trying the dead one again.
        pools.routers[deployment].set_state(replica_id, ReplicaState.UNHEALTHY)
        kill = getattr(pools.inner, "kill_replica", None)
        if callable(kill):
            killed = "SIGKILL" if await kill(deployment, replica_id) else "stopped"
        else:
            await pools.inner.stop_replica(deployment, replica_id)
            killed = "stopped"
        seen_dead = await self._detect(deployment, replica_id)
        now = clock.now()
        failure = replica_faults.GpuFailure(replica_id, f"node-{replica_id}", failed_at)
        nodes = {f"node-{r.replica_id}" for _, r in pools.records()} | set(pools.cordoned)
        snapshot = replica_faults.FaultSnapshot(
            now, tuple(sorted(nodes)), frozenset(pools.cordoned), failures=(failure,)
        )
        state = pools.node_state
        decision, pools.node_state = replica_faults.decide(pools.fault_config, snapshot, state)
        pools.decisions.record("replica_faults", deployment, snapshot, state, decision)
        pools.metrics.gpu_failures.labels(deployment, cause).inc()
        self.failures += 1
        replacements: list[str] = []
        cordoned: list[str] = []
        for step in decision.steps:
            log.warning("%s: %s", deployment, step.reason)
            if step.action is FaultAction.CORDON and step.reason_code != "cordon_cap_reached":
                pools.cordoned[step.target] = round(now, 3)
                cordoned.append(step.target)
            elif step.action is FaultAction.STOP:
                await pools.stop_replica(deployment, step.target)
                pools.routers[deployment].remove_replica(step.target)
            elif step.action is FaultAction.REPLACE and step.at_s <= now:
                replacements += await pools.start_replicas(deployment, 1)
        views = pools.routers[deployment].views()
        event: dict[str, Any] = {
            "kind": "gpu_failure",
            "at_s": round(failed_at, 3),
            "replica": replica_id,
            "deployment": deployment,
            "cause": cause,
            "pid": pid,
            "killed": killed,
            "detected_by": "process exit" if seen_dead else "not seen dead; stopped anyway",
            "detected_after_s": round(now - failed_at, 3),
            "cordoned": cordoned,
            "replacements": replacements,
            "replacement_pools": [r.pool.value for r in views if r.replica_id in replacements],
            "reason": decision.reason,
            "steps": [f"{s.action.value}: {s.reason}" for s in decision.steps],
        }
        pools.events.append(event)
        return event

    async def _detect(self, deployment: str, replica_id: str) -> bool:
        """Whether its process was seen gone (polled; bounded by ``DETECT_TIMEOUT_S``)."""
        waited = 0.0
        while self.pools.inner.alive(deployment, replica_id):
            if waited >= DETECT_TIMEOUT_S:
                return False
            await asyncio.sleep(DETECT_POLL_S)
            waited += DETECT_POLL_S
        return True

    def status(self) -> dict[str, Any]:
        return {
            "gpu_failures_per_hour": self.pools.plane.gpu_failures_per_hour,
            "gpu_failures": self.failures,
            "failing": sorted(self.failing),
        }
