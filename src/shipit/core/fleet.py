"""The fleet model: one frozen record per replica, one state enum, and the fleet state they form.

A ``ReplicaRecord`` is everything any decision may know about one replica: who it is
(id, deployment, version), where it runs (backend, capacity pool, region), where it is in its
life (``ReplicaState`` and since when), its load (in flight, the replica's own queue, KV use),
its adapters, and its capacity (``max_concurrency``, adapter slots). Routing, admission, health,
autoscaling, rollouts and the simulator all read these records; none of them mutates one: a
change is a new record (``evolve``) in a new ``FleetState``. The live registry and the
simulator build the same records, so the same policy code runs on both.

This module imports only the standard library (and ``core.frozen``, itself standard library only)
and holds no behaviour beyond derived properties.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from shipit.core.frozen import fast_init


class ReplicaState(enum.Enum):
    """Where a replica is in its life: the one state enum the router, the health policy, the
    autoscaler and the simulator share."""

    STARTING = "starting"  # launched, /health not yet 200
    READY = "ready"  # takes traffic
    DRAINING = "draining"  # cordoned: finishes what it has, takes nothing new
    UNHEALTHY = "unhealthy"  # health checks failing past the threshold
    STOPPED = "stopped"


class CapacityPool(enum.Enum):
    """How the accelerator behind a replica was bought."""

    RESERVED = "reserved"  # committed, cheapest per hour, always there
    ON_DEMAND = "on_demand"
    SPOT = "spot"  # cheap, pre-emptible


@fast_init
@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """One replica, as every policy sees it. Frozen: change it with ``evolve``."""

    replica_id: str
    url: str
    deployment: str = "default"
    version: str = "v1"  # the deployment version it serves (rollouts)
    backend: str = "local"  # where it runs: local, external, kubernetes, ray, sim
    pool: CapacityPool = CapacityPool.ON_DEMAND
    region: str = "local"  # the workload plane
    state: ReplicaState = ReplicaState.READY
    state_since_s: float = 0.0  # when it entered ``state`` (the driver's clock)
    in_flight: int = 0  # requests the gateway has on it now
    max_concurrency: int = 8  # most requests the gateway has on it at once
    queue_depth: int = 0  # the replica's own waiting queue (from its metrics)
    kv_usage: float = 0.0  # 0..1, vLLM's kv_cache_usage_perc
    adapters: frozenset[str] = field(default_factory=frozenset)
    max_adapters: int = 4  # adapter slots on the replica
    external: bool = False  # an endpoint shipit does not start or stop
    ejected_until_s: float | None = None  # passive outlier ejection

    @property
    def free_slots(self) -> int:
        return max(self.max_concurrency - self.in_flight, 0)

    @property
    def load(self) -> float:
        """In flight as a fraction of ``max_concurrency``."""
        return self.in_flight / self.max_concurrency if self.max_concurrency else 1.0

    def routable(self, now_s: float) -> bool:
        """Ready and not ejected: may be chosen (capacity is checked separately)."""
        if self.state is not ReplicaState.READY:
            return False
        return self.ejected_until_s is None or self.ejected_until_s <= now_s

    def evolve(self, **changes: Any) -> ReplicaRecord:
        """A copy with ``changes`` applied (the record itself never changes). On the hot path
        (a slot taken and given back per request), so it rebuilds the record positionally:
        ``dataclasses.replace`` costs about twice as much."""
        values = list(_ALL_FIELDS(self))
        for name, value in changes.items():
            at = _FIELD_INDEX.get(name)
            if at is None:
                raise TypeError(f"ReplicaRecord has no field {name!r}; its fields: {_FIELD_NAMES}")
            values[at] = value
        return ReplicaRecord(*values)


_FIELD_NAMES = tuple(f.name for f in fields(ReplicaRecord))
_FIELD_INDEX = {name: i for i, name in enumerate(_FIELD_NAMES)}
_ALL_FIELDS = attrgetter(*_FIELD_NAMES)


@dataclass(frozen=True, slots=True)
class FleetState:
    """Every replica of one deployment (or of a whole fleet), in registration order."""

    replicas: tuple[ReplicaRecord, ...] = ()

    def __iter__(self) -> Iterator[ReplicaRecord]:
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def __contains__(self, replica_id: object) -> bool:
        return any(r.replica_id == replica_id for r in self.replicas)

    def get(self, replica_id: str) -> ReplicaRecord | None:
        for r in self.replicas:
            if r.replica_id == replica_id:
                return r
        return None

    def put(self, record: ReplicaRecord) -> FleetState:
        """With ``record`` added, or replacing the one of the same id in place."""
        out, found = [], False
        for r in self.replicas:
            if r.replica_id == record.replica_id:
                out.append(record)
                found = True
            else:
                out.append(r)
        if not found:
            out.append(record)
        return FleetState(tuple(out))

    def without(self, replica_id: str) -> FleetState:
        return FleetState(tuple(r for r in self.replicas if r.replica_id != replica_id))

    def in_state(self, *states: ReplicaState) -> tuple[ReplicaRecord, ...]:
        return tuple(r for r in self.replicas if r.state in states)

    def of(self, deployment: str) -> FleetState:
        return FleetState(tuple(r for r in self.replicas if r.deployment == deployment))

    @classmethod
    def of_records(cls, records: Iterable[ReplicaRecord]) -> FleetState:
        return cls(tuple(records))
