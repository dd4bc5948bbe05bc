"""Pool choice: which capacity pool a new replica in a plane is bought from.

``decide(config, snapshot) -> PoolChoice``: the snapshot lists the plane's pools as offers
(price per replica-hour, replicas in use, the most the pool supplies, obtain delay) and
whether spot is short there now (a recent pre-emption wave, or no spot to be had).

1. **reserved** while it has room: it is paid whether used or not (``reserved_free``);
2. then **spot or on demand by price**: spot when it is cheaper than on demand by at least
   ``min_spot_saving`` (``spot_cheaper``), else on demand (``on_demand_cheaper``);
3. **on demand when spot is short** (``spot_short``) or spot is at its supply limit
   (``spot_full``); spot anyway when on demand is not sold or full (``only_spot``, even while
   short: a replica that may be pre-empted beats none), on demand when spot is not sold
   (``only_on_demand``);
4. nothing when every pool is full or not sold (``no_capacity``).

``release_order`` is the other way: which replicas a plane gives back first when it scales
down (on demand before spot before reserved, whose price is paid whether used or not).

Pure: no clock, no IO; the fleet simulator asks it for every replica it starts, including the
replacements of pre-empted and failed ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shipit.core.fleet import CapacityPool, ReplicaRecord, ReplicaState


@dataclass(frozen=True, slots=True)
class PoolChoiceConfig:
    min_spot_saving: float = 0.0  # spot must be this fraction cheaper than on demand


@dataclass(frozen=True, slots=True)
class PoolOffer:
    pool: CapacityPool
    usd_per_replica_hour: float
    in_use: int  # replicas running or starting in this pool now
    max_replicas: int | None = None  # None: as many as asked
    obtain_delay_s: float = 0.0

    @property
    def has_room(self) -> bool:
        return self.max_replicas is None or self.in_use < self.max_replicas


@dataclass(frozen=True, slots=True)
class PoolChoiceSnapshot:
    offers: tuple[PoolOffer, ...]  # the pools this plane sells
    spot_short: bool = False


@dataclass(frozen=True, slots=True)
class PoolChoice:
    pool: CapacityPool | None  # None: no pool can supply a replica now
    reason_code: str
    reason: str


def decide(config: PoolChoiceConfig, snapshot: PoolChoiceSnapshot) -> PoolChoice:
    offers = {o.pool: o for o in snapshot.offers}
    res = offers.get(CapacityPool.RESERVED)
    if res is not None and res.has_room:
        return PoolChoice(
            CapacityPool.RESERVED,
            "reserved_free",
            f"reserved has room ({res.in_use} of {res.max_replicas or 'unbounded'} in use); "
            "already paid for",
        )
    spot = offers.get(CapacityPool.SPOT)
    od = offers.get(CapacityPool.ON_DEMAND)
    spot_ok = spot is not None and spot.has_room
    od_ok = od is not None and od.has_room
    if spot_ok and od_ok:
        assert spot is not None and od is not None
        if snapshot.spot_short:
            return PoolChoice(
                CapacityPool.ON_DEMAND, "spot_short", "spot is short here now: on demand"
            )
        if spot.usd_per_replica_hour <= od.usd_per_replica_hour * (1 - config.min_spot_saving):
            return PoolChoice(
                CapacityPool.SPOT,
                "spot_cheaper",
                f"spot ${spot.usd_per_replica_hour:.2f}/h vs on demand "
                f"${od.usd_per_replica_hour:.2f}/h",
            )
        return PoolChoice(
            CapacityPool.ON_DEMAND,
            "on_demand_cheaper",
            f"on demand ${od.usd_per_replica_hour:.2f}/h vs spot "
            f"${spot.usd_per_replica_hour:.2f}/h (saving under {config.min_spot_saving:.0%})",
        )
    if od_ok:
        assert od is not None
        if spot is not None:
            return PoolChoice(
                CapacityPool.ON_DEMAND,
                "spot_full",
                f"spot at its supply limit ({spot.in_use} of {spot.max_replicas}): on demand",
            )
        return PoolChoice(CapacityPool.ON_DEMAND, "only_on_demand", "no spot sold here")
    if spot_ok:
        assert spot is not None
        short = " (short: it may not last)" if snapshot.spot_short else ""
        return PoolChoice(
            CapacityPool.SPOT, "only_spot", f"on demand full or not sold: spot{short}"
        )
    full = ", ".join(f"{o.pool.value} {o.in_use}/{o.max_replicas}" for o in snapshot.offers)
    return PoolChoice(None, "no_capacity", f"every pool is full or not sold ({full or 'none'})")


def release_order(
    replicas: Sequence[ReplicaRecord],
    count: int,
    marginal_usd_per_hour: Mapping[CapacityPool, float],
) -> tuple[str, ...]:
    """Which ``count`` replicas to give back when a plane scales down: those still starting
    first (newest first: they serve nothing yet), then ready ones by what keeping them costs
    per hour, dearest first (reserved capacity already paid is worth 0 and goes last), then the
    fewest requests in flight (they drain soonest)."""
    if count <= 0:
        return ()
    starting = sorted(
        (r for r in replicas if r.state is not ReplicaState.READY), key=lambda r: -r.state_since_s
    )
    ready = sorted(
        (r for r in replicas if r.state is ReplicaState.READY),
        key=lambda r: (-marginal_usd_per_hour.get(r.pool, 0.0), r.in_flight, -r.state_since_s),
    )
    return tuple(r.replica_id for r in [*starting, *ready][:count])
