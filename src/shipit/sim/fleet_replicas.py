"""One workload plane in the fleet simulator: its replicas, pools, counts and spend.

A ``PlaneSim`` owns the replicas of one plane as small mutable objects (the simulator changes
thousands of them; the policies get frozen ``ReplicaRecord``s built from them), counts them by
state and pool as they change (so a tick never walks every replica to count), and charges
every replica that holds a machine (starting, ready or draining) its pool's price per GPU-hour.
Reserved capacity with ``max_replicas`` is a commitment: those replicas are paid all the time,
used or not (more reserved replicas than that cannot run). Without a limit, reserved is paid
while used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.fleet import PlaneConfig, PoolConfig
from shipit.core.fleet import CapacityPool, ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import AutoscalingState
from shipit.policy.pool_choice import PoolChoiceSnapshot, PoolOffer

POOLS = (CapacityPool.RESERVED, CapacityPool.ON_DEMAND, CapacityPool.SPOT)
_HOLDING = (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.DRAINING)


@dataclass(slots=True)
class SimReplica:
    rid: str
    plane: str
    pool: CapacityPool
    node: str
    state: ReplicaState
    since_s: float
    gpu_dead: bool = False  # failed, not detected yet
    fault_at_s: float | None = None  # what it replaces failed or was pre-empted at


def pool_config(plane: PlaneConfig, pool: CapacityPool) -> PoolConfig | None:
    pools = plane.pools
    if pool is CapacityPool.RESERVED:
        return pools.reserved
    if pool is CapacityPool.ON_DEMAND:
        return pools.on_demand
    return pools.spot


@dataclass
class PlaneSim:
    cfg: PlaneConfig
    gpus_per_replica: int
    concurrency: int
    replicas: dict[str, SimReplica] = field(default_factory=dict)
    counts: dict[tuple[ReplicaState, CapacityPool], int] = field(default_factory=dict)
    dead_ready: int = 0  # ready replicas whose GPU died, not detected yet
    backlog: float = 0.0
    busy: float = 0.0
    arrivals: int = 0
    completed: int = 0
    completed_f: float = 0.0
    service_total_s: float = 0.0
    down: bool = False  # an outage: its gateway answers nothing
    shortage_window_s: float = 1800.0
    preempted_at: deque[float] = field(default_factory=deque)  # inside the window
    spot_gone: bool = False  # a scheduled shortage: no spot to be had
    scaling: AutoscalingConfig | None = None
    scaling_state: AutoscalingState = field(default_factory=AutoscalingState)
    cost_usd: dict[CapacityPool, float] = field(default_factory=dict)
    gpu_hours: dict[CapacityPool, float] = field(default_factory=dict)
    started: int = 0
    refused: int = 0  # starts no pool could supply
    _records: dict[str, ReplicaRecord] = field(default_factory=dict)
    _tuple: tuple[ReplicaRecord, ...] | None = None
    _each: int = 0  # requests in flight per ready replica, as the records say

    @property
    def name(self) -> str:
        return self.cfg.name

    def count(self, state: ReplicaState, pool: CapacityPool | None = None) -> int:
        if pool is not None:
            return self.counts.get((state, pool), 0)
        return sum(self.counts.get((state, p), 0) for p in POOLS)

    def holding(self, pool: CapacityPool) -> int:
        return sum(self.counts.get((s, pool), 0) for s in _HOLDING)

    @property
    def serving_slots(self) -> int:
        return (self.count(ReplicaState.READY) - self.dead_ready) * self.concurrency

    def add(self, r: SimReplica) -> None:
        self.replicas[r.rid] = r
        key = (r.state, r.pool)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.started += 1
        self._changed(r)

    def move(self, r: SimReplica, state: ReplicaState, now_s: float) -> None:
        old = (r.state, r.pool)
        self.counts[old] -= 1
        if r.gpu_dead and r.state is ReplicaState.READY:
            self.dead_ready -= 1
        r.state, r.since_s = state, now_s
        self._changed(r)
        if state is ReplicaState.STOPPED:
            del self.replicas[r.rid]
            return
        key = (state, r.pool)
        self.counts[key] = self.counts.get(key, 0) + 1
        if r.gpu_dead and state is ReplicaState.READY:
            self.dead_ready += 1

    def kill_gpu(self, r: SimReplica) -> None:
        r.gpu_dead = True
        if r.state is ReplicaState.READY:
            self.dead_ready += 1

    def offers(self, now_s: float) -> PoolChoiceSnapshot:
        out = []
        for pool in POOLS:
            pc = pool_config(self.cfg, pool)
            if pc is None:
                continue
            most = pc.max_replicas
            in_use = self.holding(pool)
            if pool is CapacityPool.SPOT and self.spot_gone:
                most = in_use  # nothing more to be had
            out.append(
                PoolOffer(
                    pool,
                    pc.usd_per_gpu_hour * self.gpus_per_replica,
                    in_use,
                    most,
                    pc.obtain_delay_s,
                )
            )
        return PoolChoiceSnapshot(tuple(out), spot_short=self.spot_short(now_s))

    def spot_short(self, now_s: float) -> bool:
        """No spot to be had (a scheduled shortage), or a pre-emption wave: over the last
        ``shortage_window_s`` at least twice the pre-emptions the spot replicas held would see
        at the pool's rate (and at least one: in a small fleet one pre-emption is a wave)."""
        if self.spot_gone:
            return True
        while self.preempted_at and now_s - self.preempted_at[0] > self.shortage_window_s:
            self.preempted_at.popleft()
        if not self.preempted_at:
            return False
        pc = self.cfg.pools.spot
        rate = pc.preemptions_per_hour if pc is not None else 0.0
        expected = self.holding(CapacityPool.SPOT) * rate * self.shortage_window_s / 3600.0
        return len(self.preempted_at) >= max(1.0, 2.0 * expected)

    def _billed(self) -> Iterator[tuple[CapacityPool, PoolConfig, int]]:
        """Each sold pool with the replicas paid for in it now: those held, and for reserved
        at least the whole commitment (paid whether used or not)."""
        for pool in POOLS:
            pc = pool_config(self.cfg, pool)
            if pc is None:
                continue
            n = self.holding(pool)
            if pool is CapacityPool.RESERVED and pc.max_replicas is not None:
                n = max(n, pc.max_replicas)
            yield pool, pc, n

    def charge(self, dt_s: float) -> float:
        """Pay for ``dt_s`` of every machine held; returns the dollars."""
        spent = 0.0
        for pool, pc, n in self._billed():
            if n == 0:
                continue
            gpu_h = n * self.gpus_per_replica * dt_s / 3600.0
            usd = gpu_h * pc.usd_per_gpu_hour
            self.cost_usd[pool] = self.cost_usd.get(pool, 0.0) + usd
            self.gpu_hours[pool] = self.gpu_hours.get(pool, 0.0) + gpu_h
            spent += usd
        return spent

    def usd_per_hour(self) -> float:
        return sum(n * self.gpus_per_replica * pc.usd_per_gpu_hour for _, pc, n in self._billed())

    def marginal(self) -> dict[CapacityPool, float]:
        """What keeping one more replica of each pool costs per hour (committed reserved
        capacity is paid anyway: 0)."""
        out = {}
        for pool in POOLS:
            pc = pool_config(self.cfg, pool)
            if pc is not None:
                paid = pool is CapacityPool.RESERVED and pc.max_replicas is not None
                out[pool] = 0.0 if paid else pc.usd_per_gpu_hour * self.gpus_per_replica
        return out

    def capacity(self) -> int:
        """The most replicas this plane can run: its own cap and its pools' supply."""
        supply = 0
        for pool in POOLS:
            pc = pool_config(self.cfg, pool)
            if pc is None:
                continue
            if pc.max_replicas is None:
                return self.cfg.max_replicas
            supply += 0 if (pool is CapacityPool.SPOT and self.spot_gone) else pc.max_replicas
        return min(self.cfg.max_replicas, supply)

    def cheapest_usd_per_replica_hour(self) -> float:
        prices = [
            pc.usd_per_gpu_hour
            for pool in POOLS
            if (pc := pool_config(self.cfg, pool)) is not None
            and (pc.max_replicas is None or self.holding(pool) < pc.max_replicas)
        ]
        return min(prices, default=0.0) * self.gpus_per_replica

    def _record(self, r: SimReplica) -> ReplicaRecord:
        return ReplicaRecord(
            replica_id=r.rid,
            url="",
            deployment=self.name,
            backend="sim",
            pool=r.pool,
            region=self.name,
            state=r.state,
            state_since_s=r.since_s,
            in_flight=self._each if r.state is ReplicaState.READY else 0,
            max_concurrency=self.concurrency,
        )

    def _changed(self, r: SimReplica) -> None:
        """Keep the autoscaler's records in step with one replica's change (O(1))."""
        self._tuple = None
        if r.state in (ReplicaState.STARTING, ReplicaState.READY):
            self._records[r.rid] = self._record(r)
        else:
            self._records.pop(r.rid, None)

    def records(self, now_s: float) -> tuple[ReplicaRecord, ...]:
        """Starting and ready replicas as the autoscaler sees them (draining ones it does not
        count); requests in service spread evenly over the ready ones. Kept up to date as
        replicas change; rebuilt only when the requests per ready replica moved by a whole
        request (what the autoscaler reads from them is idleness and whom to stop first)."""
        ready = self.count(ReplicaState.READY)
        per = self.busy / ready if ready else 0.0
        if abs(per - self._each) >= 1.0 or (per == 0.0) != (self._each == 0):
            self._each = round(per)
            for rid, rec in self._records.items():
                if rec.state is ReplicaState.READY:
                    self._records[rid] = self._record(self.replicas[rid])
            self._tuple = None
        if self._tuple is None:
            self._tuple = tuple(self._records.values())
        return self._tuple
