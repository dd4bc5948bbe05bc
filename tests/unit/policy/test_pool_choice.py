"""Pool choice for a new replica: reserved first, then spot or on demand by price and shortage."""

from __future__ import annotations

from typing import Any

import pytest

from shipit.core.fleet import CapacityPool as P
from shipit.policy.pool_choice import PoolChoiceConfig, PoolChoiceSnapshot, PoolOffer, decide

RES = PoolOffer(P.RESERVED, 2.0, in_use=3, max_replicas=4)
RES_FULL = PoolOffer(P.RESERVED, 2.0, in_use=4, max_replicas=4)
OD = PoolOffer(P.ON_DEMAND, 4.0, in_use=10)
SPOT = PoolOffer(P.SPOT, 1.5, in_use=10, max_replicas=20)
SPOT_FULL = PoolOffer(P.SPOT, 1.5, in_use=20, max_replicas=20)


@pytest.mark.parametrize(
    ("offers", "short", "pool", "code"),
    [
        ((RES, OD, SPOT), False, P.RESERVED, "reserved_free"),
        ((RES, OD, SPOT), True, P.RESERVED, "reserved_free"),
        ((RES_FULL, OD, SPOT), False, P.SPOT, "spot_cheaper"),
        ((RES_FULL, OD, SPOT), True, P.ON_DEMAND, "spot_short"),
        ((RES_FULL, OD, SPOT_FULL), False, P.ON_DEMAND, "spot_full"),
        ((OD,), False, P.ON_DEMAND, "only_on_demand"),
        ((SPOT,), True, P.SPOT, "only_spot"),
        ((PoolOffer(P.ON_DEMAND, 4.0, in_use=2, max_replicas=2), SPOT), True, P.SPOT, "only_spot"),
        ((RES_FULL, SPOT_FULL), False, None, "no_capacity"),
    ],
)
def test_choice(offers: tuple[PoolOffer, ...], short: bool, pool: P | None, code: str) -> None:
    choice = decide(PoolChoiceConfig(), PoolChoiceSnapshot(offers, spot_short=short))
    assert (choice.pool, choice.reason_code) == (pool, code)


def test_spot_that_saves_too_little_loses_to_on_demand() -> None:
    pricey_spot = PoolOffer(P.SPOT, 3.8, in_use=0)
    snap = PoolChoiceSnapshot((OD, pricey_spot))
    assert decide(PoolChoiceConfig(), snap).pool is P.SPOT
    d = decide(PoolChoiceConfig(min_spot_saving=0.1), snap)
    assert (d.pool, d.reason_code) == (P.ON_DEMAND, "on_demand_cheaper")


def _rec(rid: str, pool: P, state: str = "ready", since: float = 0.0, flight: int = 0) -> Any:
    from shipit.core.fleet import ReplicaRecord, ReplicaState

    return ReplicaRecord(
        rid, "", pool=pool, state=ReplicaState(state), state_since_s=since, in_flight=flight
    )


def test_release_order_gives_back_starting_then_the_dearest_to_keep() -> None:
    from shipit.policy.pool_choice import release_order

    replicas = [
        _rec("res", P.RESERVED),
        _rec("spot", P.SPOT),
        _rec("od-busy", P.ON_DEMAND, flight=5),
        _rec("od-idle", P.ON_DEMAND, flight=1),
        _rec("new", P.SPOT, state="starting", since=10.0),
    ]
    marginal = {P.RESERVED: 0.0, P.SPOT: 1.5, P.ON_DEMAND: 4.0}
    assert release_order(replicas, 5, marginal) == ("new", "od-idle", "od-busy", "spot", "res")
    assert release_order(replicas, 2, marginal) == ("new", "od-idle")
    assert release_order(replicas, 0, marginal) == ()
