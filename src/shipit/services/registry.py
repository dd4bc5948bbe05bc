"""The live replica registry of one deployment: the frozen ``ReplicaRecord`` of each replica.

Owns the one current record per replica and replaces it (never mutates it) on every change:
registration, state transitions (stamped with the registry's clock), load and KV figures from
the monitor, adapters, in-flight counts from the router, outlier ejections. Everyone else (the
router, the monitor, the autoscaler, the gateway's status pages, the fleet of backends) reads
and changes replicas through its methods, never through a shared dict. Listeners hear about
every change that can make a replica routable, so the router can hand out freed slots.

It must not decide anything (the policies do) and must not do IO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shipit.core.clock import Clock
from shipit.core.fleet import CapacityPool, FleetState, ReplicaRecord, ReplicaState


class ReplicaRegistry:
    def __init__(
        self, deployment: str, *, clock: Clock, max_concurrency: int, version: str = "v1"
    ) -> None:
        self.deployment = deployment
        self.clock = clock
        self.max_concurrency = max_concurrency
        self.version = version
        self._records: dict[str, ReplicaRecord] = {}
        self._snapshot: tuple[ReplicaRecord, ...] | None = ()
        # Told after a change that may free capacity (a replica added, a state change, a slot
        # given back); the router dispatches waiters from here.
        self.listeners: list[Callable[[], None]] = []

    # ----- reading --------------------------------------------------------------------------
    def records(self) -> tuple[ReplicaRecord, ...]:
        """Every record, in registration order (cached until the next change)."""
        if self._snapshot is None:
            self._snapshot = tuple(self._records.values())
        return self._snapshot

    def fleet(self) -> FleetState:
        return FleetState(self.records())

    def get(self, replica_id: str) -> ReplicaRecord | None:
        return self._records.get(replica_id)

    def ids(self) -> list[str]:
        return list(self._records)

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def count(self, *states: ReplicaState) -> int:
        return sum(1 for r in self._records.values() if r.state in states)

    # ----- changing -------------------------------------------------------------------------
    def _put(self, record: ReplicaRecord) -> None:
        self._records[record.replica_id] = record
        self._snapshot = None

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()

    def add(
        self,
        replica_id: str,
        url: str,
        *,
        state: ReplicaState = ReplicaState.STARTING,
        external: bool = False,
        backend: str | None = None,
        version: str | None = None,
    ) -> ReplicaRecord:
        record = ReplicaRecord(
            replica_id,
            url.rstrip("/"),
            deployment=self.deployment,
            version=version or self.version,
            backend=backend or ("external" if external else "local"),
            state=state,
            state_since_s=self.clock.now(),
            max_concurrency=self.max_concurrency,
            external=external,
        )
        self._put(record)
        self._notify()
        return record

    def remove(self, replica_id: str) -> ReplicaRecord | None:
        record = self._records.pop(replica_id, None)
        self._snapshot = None
        return record

    def set_state(self, replica_id: str, state: ReplicaState) -> bool:
        """Move a replica to ``state``; False when it is gone or already there."""
        record = self._records.get(replica_id)
        if record is None or record.state is state:
            return False
        self._put(record.evolve(state=state, state_since_s=self.clock.now()))
        self._notify()
        return True

    def set_pool(self, replica_id: str, pool: CapacityPool) -> None:
        """The capacity pool the replica was bought from (a live fleet plane's pools)."""
        record = self._records.get(replica_id)
        if record is not None and record.pool is not pool:
            self._put(record.evolve(pool=pool))

    def update_load(self, replica_id: str, *, queue_depth: int, kv_usage: float) -> None:
        record = self._records.get(replica_id)
        if record is not None:
            self._put(record.evolve(queue_depth=queue_depth, kv_usage=kv_usage))

    def set_adapters(self, replica_id: str, adapters: Iterable[str]) -> None:
        record = self._records.get(replica_id)
        if record is not None:
            self._put(record.evolve(adapters=frozenset(adapters)))

    def add_adapter(self, replica_id: str, adapter: str) -> None:
        record = self._records.get(replica_id)
        if record is not None and adapter not in record.adapters:
            self._put(record.evolve(adapters=record.adapters | {adapter}))

    def drop_adapter(self, replica_id: str, adapter: str) -> None:
        record = self._records.get(replica_id)
        if record is not None and adapter in record.adapters:
            self._put(record.evolve(adapters=record.adapters - {adapter}))

    def take_slot(self, replica_id: str) -> ReplicaRecord:
        record = self._records[replica_id]
        record = record.evolve(in_flight=record.in_flight + 1)
        self._put(record)
        return record

    def give_slot(self, replica_id: str) -> ReplicaRecord | None:
        record = self._records.get(replica_id)
        if record is None:
            return None
        record = record.evolve(in_flight=max(record.in_flight - 1, 0))
        self._put(record)
        return record

    def eject(self, replica_id: str, until_s: float | None) -> None:
        record = self._records.get(replica_id)
        if record is not None and record.ejected_until_s != until_s:
            self._put(record.evolve(ejected_until_s=until_s))
