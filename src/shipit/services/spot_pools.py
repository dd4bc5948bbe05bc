"""A live plane's capacity pools: which pool each replica is bought from, and spot pre-emptions.

``PlanePools`` runs in the gateway of a plane of a live fleet (its config has a ``plane:``
section, written by ``shipit up --fleet`` from the fleet file's pools). It is the autoscaler's
``ReplicaPool`` in front of the real one (``backends.Fleet``): every replica it starts picks its
pool through ``policy.pool_choice.decide`` (reserved while it has room, spot or on demand by
price, on demand while spot is short), and the replicas started before it ran (the first ones)
get theirs the same way on its first tick. The pool is on the replica's record
(``ReplicaRecord.pool``), so ``/shipit/status`` shows it.

Every ``spot_check_interval_s`` it draws, for each ready spot replica, whether the provider
pre-empts it in that interval (``preemptions_per_hour``, from a seeded RNG); ``preempt`` gives
one a notice at once (``POST /shipit/pools/preempt``, for tests and drills). A notice goes
through ``policy.replica_faults.decide``: ``DRAIN`` (the router sends it nothing new; what it has
in flight goes on, and the autoscaler's lifecycle policy stops it once empty), ``REPLACE``
(another replica, its pool chosen again: spot counts as short after a pre-emption, so on
demand where sold) and ``STOP`` at the end of the notice if it is still there. Counted in
``shipit_spot_preemptions_total`` and ``shipit_pool_choices_total``; ``status`` is
``/shipit/status``'s ``pools``. It decides nothing itself.

A pool with an ``obtain_delay_s`` has no machine ready at once: the replica is a ``starting``
stand-in (backend ``obtaining``, no process, never probed ready) that the autoscaler counts,
so it starts no more meanwhile; once the delay has passed the real replica starts in the
background and the stand-in goes. Stopping a stand-in stops the wait. GPU failures (drawn at
the fleet's rate, or ``POST /shipit/pools/fail``) are ``services.gpu_failures``'.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shipit.config.pools import LivePlaneConfig, PoolConfig
from shipit.core.clock import Clock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import CapacityPool, ReplicaRecord, ReplicaState
from shipit.policy import pool_choice, replica_faults
from shipit.policy.node_health import NodeHealthState
from shipit.policy.pool_choice import PoolChoice, PoolChoiceSnapshot, PoolOffer
from shipit.services.autoscaler import ReplicaPool
from shipit.services.gpu_failures import PlaneGpuFailures, PoolError
from shipit.services.router import RouterService
from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import ControlPlaneMetrics, snapshot_family

__all__ = ["PlanePools", "PoolError", "pool_config"]

log = logging.getLogger("shipit.pools")
POOLS = (CapacityPool.RESERVED, CapacityPool.ON_DEMAND, CapacityPool.SPOT)
_HOLDING = (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.DRAINING)
HISTORY = 50
OBTAINING_URL = "http://127.0.0.1:0"  # a stand-in's: never reachable, so never ready


@dataclass(slots=True)
class Obtaining:
    """A replica waiting for its machine (its pool's ``obtain_delay_s``)."""

    deployment: str
    pool: CapacityPool
    since_s: float
    delay_s: float
    task: asyncio.Future[None]
    sleeping: bool = True


def pool_config(plane: LivePlaneConfig, pool: CapacityPool) -> PoolConfig | None:
    if pool is CapacityPool.RESERVED:
        return plane.pools.reserved
    if pool is CapacityPool.ON_DEMAND:
        return plane.pools.on_demand
    return plane.pools.spot


class _ByPool(Collector):
    def __init__(self, pools: PlanePools) -> None:
        self.pools = pools

    def collect(self) -> list[Metric]:
        samples = [
            ((deployment, pool.value), float(n))
            for (deployment, pool), n in sorted(
                self.pools.holding_by_deployment().items(),
                key=lambda kv: (kv[0][0], kv[0][1].value),
            )
        ]
        return [snapshot_family(cat.REPLICAS_BY_POOL, samples)]


class PlanePools:
    def __init__(
        self,
        plane: LivePlaneConfig,
        routers: Mapping[str, RouterService],
        inner: ReplicaPool,
        *,
        clock: Clock,
        registry: CollectorRegistry,
        metrics: ControlPlaneMetrics,
        log_decisions: DecisionLog = NO_LOG,
    ) -> None:
        self.plane = plane
        self.routers = dict(routers)
        self.inner = inner
        self.clock = clock
        self.decisions = log_decisions
        self.rng = random.Random(f"{plane.spot_seed}:{plane.name}")
        self.metrics = metrics
        registry.register(_ByPool(self))
        self.labelled: set[str] = set()
        self.deadlines: dict[str, tuple[str, float]] = {}  # noticed: (deployment, deadline)
        self.preempted_at: deque[float] = deque()
        self.node_state = NodeHealthState()
        self.fault_config = replica_faults.LIVE_PLANE  # each replica its own pseudo-node
        self.cordoned: dict[str, float] = {}  # pseudo-node: when
        self.events: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.choices: Counter[str] = Counter()
        self.refused = 0
        self.preemptions = 0
        self._last_draw_s: float | None = None
        self._taking: set[asyncio.Future[None]] = set()
        self.obtaining: dict[str, Obtaining] = {}  # stand-in id: its wait
        self._obtain_seq = itertools.count()
        self.gpus = PlaneGpuFailures(self)

    # ----- the autoscaler's ReplicaPool ------------------------------------------------------
    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        started: list[str] = []
        for _ in range(count):
            choice = self.choose(deployment)
            if choice.pool is None:
                self.refused += 1
                log.warning("%s: no replica started: %s", deployment, choice.reason)
                break
            pc = pool_config(self.plane, choice.pool)
            if pc is not None and pc.obtain_delay_s > 0:
                started.append(self._obtain(deployment, choice.pool, pc.obtain_delay_s))
                continue
            ids = await self.inner.start_replicas(deployment, 1)
            for rid in ids:
                self._label(deployment, rid, choice.pool)
            started += ids
        return started

    def _obtain(self, deployment: str, pool: CapacityPool, delay_s: float) -> str:
        """A replica whose machine takes ``delay_s`` to obtain: a ``starting`` record (backend
        ``obtaining``, no process yet) stands for it meanwhile, so the autoscaler counts it and
        starts no more; the real replica starts in the background once the delay has passed."""
        pid = f"{deployment}-obtaining-{next(self._obtain_seq)}"
        registry = self.routers[deployment].registry
        registry.add(pid, OBTAINING_URL, backend="obtaining")
        registry.set_pool(pid, pool)
        self.labelled.add(pid)
        task = asyncio.ensure_future(self._obtained(deployment, pid, pool, delay_s))
        self.obtaining[pid] = Obtaining(deployment, pool, self.clock.now(), delay_s, task)
        log.info("%s: obtaining a %s machine for %s (%gs)", deployment, pool.value, pid, delay_s)
        return pid

    async def _obtained(
        self, deployment: str, pid: str, pool: CapacityPool, delay_s: float
    ) -> None:
        await asyncio.sleep(delay_s)
        entry = self.obtaining.get(pid)
        if entry is None:
            return  # stopped while waiting
        entry.sleeping = False
        ids: list[str] = []
        try:
            ids = await self.inner.start_replicas(deployment, 1)
            for rid in ids:
                self._label(deployment, rid, pool)
        except Exception:  # the autoscaler sees one fewer and starts another
            log.exception("%s: replica for %s not started after its machine came", deployment, pid)
        finally:
            # The real replica is registered before the stand-in goes: the count never dips.
            self.obtaining.pop(pid, None)
            self.labelled.discard(pid)
            self.routers[deployment].remove_replica(pid)
        now = self.clock.now()
        self.events.append(
            {
                "kind": "obtained",
                "at_s": round(now, 3),
                "deployment": deployment,
                "pool": pool.value,
                "stand_in": pid,
                "replicas": ids,
                "obtain_delay_s": delay_s,
                "waited_s": round(now - entry.since_s, 3),
                "reason": f"{pool.value} machine obtained after {delay_s:g}s; "
                f"replica {', '.join(ids) or 'none'} starting",
            }
        )

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        entry = self.obtaining.pop(replica_id, None)
        if entry is not None:  # no machine yet: stop waiting for one
            if entry.sleeping:
                entry.task.cancel()
            self.labelled.discard(replica_id)
            self.routers[deployment].registry.remove(replica_id)
            return
        await self.inner.stop_replica(deployment, replica_id)
        self.labelled.discard(replica_id)
        self.deadlines.pop(replica_id, None)

    def managed(self, deployment: str) -> list[str]:
        waiting = [pid for pid, o in self.obtaining.items() if o.deployment == deployment]
        return self.inner.managed(deployment) + waiting

    def alive(self, deployment: str, replica_id: str) -> bool:
        # A stand-in has no process; a replica whose GPU failed is the fault flow's to stop
        # and replace, not a crash for the autoscaler's lifecycle to reap and back off from.
        if replica_id in self.obtaining or replica_id in self.gpus.failing:
            return True
        return self.inner.alive(deployment, replica_id)

    async def cold_start_phases(
        self, deployment: str, replica_id: str
    ) -> tuple[tuple[str, float], ...]:
        phases = getattr(self.inner, "cold_start_phases", None)
        if phases is None or replica_id in self.obtaining:
            return ()
        found: tuple[tuple[str, float], ...] = await phases(deployment, replica_id)
        return found

    # ----- pools -----------------------------------------------------------------------------
    def records(self) -> list[tuple[str, ReplicaRecord]]:
        return [(name, r) for name, router in self.routers.items() for r in router.views()]

    def holding(self, pool: CapacityPool) -> int:
        return sum(
            1
            for _, r in self.records()
            if r.replica_id in self.labelled and r.pool is pool and r.state in _HOLDING
        )

    def holding_by_deployment(self) -> dict[tuple[str, CapacityPool], int]:
        out: Counter[tuple[str, CapacityPool]] = Counter()
        for name, r in self.records():
            if r.replica_id in self.labelled and r.state in _HOLDING:
                out[(name, r.pool)] += 1
        return dict(out)

    def spot_short(self, now_s: float) -> bool:
        """A pre-emption wave: over the last ``spot_shortage_s`` at least twice the
        pre-emptions the spot replicas held would see at the pool's rate (at least one)."""
        window = self.plane.spot_shortage_s
        while self.preempted_at and now_s - self.preempted_at[0] > window:
            self.preempted_at.popleft()
        if not self.preempted_at:
            return False
        spot = self.plane.pools.spot
        rate = spot.preemptions_per_hour if spot is not None else 0.0
        expected = self.holding(CapacityPool.SPOT) * rate * window / 3600.0
        return len(self.preempted_at) >= max(1.0, 2.0 * expected)

    def offers(self, now_s: float) -> PoolChoiceSnapshot:
        out = []
        for pool in POOLS:
            pc = pool_config(self.plane, pool)
            if pc is not None:
                out.append(
                    PoolOffer(
                        pool,
                        pc.usd_per_gpu_hour * self.plane.gpus_per_replica,
                        self.holding(pool),
                        pc.max_replicas,
                        pc.obtain_delay_s,
                    )
                )
        return PoolChoiceSnapshot(tuple(out), spot_short=self.spot_short(now_s))

    def choose(self, deployment: str) -> PoolChoice:
        snapshot = self.offers(self.clock.now())
        choice = pool_choice.decide(pool_choice.PoolChoiceConfig(), snapshot)
        self.decisions.record("pool_choice", deployment, snapshot, None, choice)
        pool = choice.pool.value if choice.pool is not None else "none"
        self.metrics.pool_choices.labels(deployment, pool, choice.reason_code).inc()
        self.choices[f"{pool}/{choice.reason_code}"] += 1
        return choice

    def _label(self, deployment: str, replica_id: str, pool: CapacityPool) -> None:
        self.routers[deployment].registry.set_pool(replica_id, pool)
        self.labelled.add(replica_id)
        log.info("%s: replica %s in pool %s", deployment, replica_id, pool.value)

    def adopt(self) -> None:
        """Replicas started before this ran (or by a rollout) get their pool the same way."""
        for name, r in self.records():
            if r.replica_id not in self.labelled and not r.external and r.state in _HOLDING:
                choice = self.choose(name)
                self._label(name, r.replica_id, choice.pool or CapacityPool.ON_DEMAND)

    # ----- pre-emptions ----------------------------------------------------------------------
    def draw(self, now_s: float) -> list[tuple[str, str]]:
        """The ready spot replicas the provider pre-empts since the last draw."""
        spot = self.plane.pools.spot
        last, self._last_draw_s = self._last_draw_s, now_s
        if spot is None or spot.preemptions_per_hour <= 0 or last is None or now_s <= last:
            return []
        p = 1.0 - math.exp(-spot.preemptions_per_hour * (now_s - last) / 3600.0)
        hit = []
        for name, r in self.records():
            if (
                r.pool is CapacityPool.SPOT
                and r.state is ReplicaState.READY
                and r.replica_id in self.labelled
                and r.replica_id not in self.deadlines
                and self.rng.random() < p
            ):
                hit.append((name, r.replica_id))
        return hit

    async def preempt(self, replica_id: str, cause: str = "triggered") -> dict[str, Any]:
        """A pre-emption notice for one spot replica now; ``PoolError`` says why not."""
        found = next(((n, r) for n, r in self.records() if r.replica_id == replica_id), None)
        if found is None:
            known = ", ".join(r.replica_id for _, r in self.records()) or "none"
            raise PoolError(f"no replica {replica_id!r} in this plane (replicas: {known})")
        name, record = found
        if record.pool is not CapacityPool.SPOT:
            raise PoolError(
                f"replica {replica_id} is in pool {record.pool.value}; only spot replicas are "
                "pre-empted"
            )
        if replica_id in self.deadlines:
            left = self.deadlines[replica_id][1] - self.clock.now()
            raise PoolError(
                f"replica {replica_id} already has its notice ({max(left, 0):.0f}s left); "
                "name another spot replica"
            )
        if replica_id in self.obtaining:
            raise PoolError(
                f"replica {replica_id} is still being obtained from the spot pool; only a ready "
                "replica can be pre-empted: wait until it is ready (GET /shipit/status)"
            )
        if record.state is not ReplicaState.READY:
            raise PoolError(
                f"replica {replica_id} is {record.state.value}; only a ready replica can be "
                "pre-empted: wait until it is ready (GET /shipit/status) or name another"
            )
        return await self._notice(name, replica_id, cause)

    async def _notice(self, deployment: str, replica_id: str, cause: str) -> dict[str, Any]:
        now = self.clock.now()
        spot = self.plane.pools.spot
        deadline = now + (spot.notice_s if spot is not None else 0.0)
        notice = replica_faults.SpotNotice(replica_id, f"node-{replica_id}", deadline)
        snapshot = replica_faults.FaultSnapshot(
            now, tuple(f"node-{r.replica_id}" for _, r in self.records()), notices=(notice,)
        )
        state = self.node_state
        decision, self.node_state = replica_faults.decide(self.fault_config, snapshot, state)
        self.decisions.record("replica_faults", deployment, snapshot, state, decision)
        self.metrics.spot_preemptions.labels(deployment, cause).inc()
        self.preemptions += 1
        self.preempted_at.append(now)
        self.deadlines[replica_id] = (deployment, deadline)
        router = self.routers[deployment]
        replacements: list[str] = []
        for step in decision.steps:
            log.warning("%s: %s", deployment, step.reason)
            if step.action is replica_faults.FaultAction.DRAIN:
                router.set_state(replica_id, ReplicaState.DRAINING)
            elif step.action is replica_faults.FaultAction.REPLACE and step.at_s <= now:
                replacements += await self.start_replicas(deployment, 1)
        event = {
            "kind": "spot_notice",
            "at_s": round(now, 3),
            "replica": replica_id,
            "deployment": deployment,
            "cause": cause,
            "deadline_s": round(deadline, 3),
            "replacements": replacements,
            "replacement_pools": [
                r.pool.value for r in router.views() if r.replica_id in replacements
            ],
            "reason": decision.reason,
            "steps": [f"{s.action.value}: {s.reason}" for s in decision.steps],
        }
        self.events.append(event)
        return event

    async def tick(self) -> None:
        now = self.clock.now()
        self.adopt()
        for deployment, rid in self.draw(now):
            await self._notice(deployment, rid, "drawn")
        await self.gpus.tick(now)
        for rid, (deployment, deadline) in list(self.deadlines.items()):
            if rid not in self.routers[deployment].registry:
                del self.deadlines[rid]  # drained and stopped by the autoscaler
            elif now >= deadline:  # the provider takes the machine
                del self.deadlines[rid]
                log.warning("%s: %s pre-empted at the end of its notice", deployment, rid)
                # In the background: the stop waits for the replica to exit, and the draw
                # must go on meanwhile.
                task = asyncio.ensure_future(self._take(deployment, rid))
                self._taking.add(task)
                task.add_done_callback(self._taking.discard)

    async def _take(self, deployment: str, replica_id: str) -> None:
        await self.stop_replica(deployment, replica_id)
        self.routers[deployment].remove_replica(replica_id)

    async def close(self) -> None:
        """Stop waiting for machines; wait for the stops at a notice's end in progress."""
        for entry in self.obtaining.values():
            entry.task.cancel()
        waits = [e.task for e in self.obtaining.values()]
        await asyncio.gather(*self._taking, *waits, return_exceptions=True)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug in one tick must not stop the pools for good
                log.exception("plane pools tick failed")
            await asyncio.sleep(self.plane.spot_check_interval_s)

    # ----- views -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        by_pool: Counter[CapacityPool] = Counter()
        for (_, pool), n in self.holding_by_deployment().items():
            by_pool[pool] += n
        return {
            "plane": self.plane.name,
            "pools": self.plane.pools.model_dump(exclude_none=True),
            "replicas_by_pool": {p.value: by_pool.get(p, 0) for p in POOLS},
            "spot_short": self.spot_short(now),
            "preemptions": self.preemptions,
            "noticed": {rid: round(d - now, 3) for rid, (_, d) in self.deadlines.items()},
            "obtaining": {
                pid: {"pool": o.pool.value, "left_s": round(max(o.since_s + o.delay_s - now, 0), 3)}
                for pid, o in self.obtaining.items()
            },
            **self.gpus.status(),
            "cordoned": dict(self.cordoned),
            "choices": dict(sorted(self.choices.items())),
            "refused_starts": self.refused,
            "events": list(self.events),
        }
