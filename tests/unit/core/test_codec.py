"""The replayable-record codec: every value kind round-trips exactly; what cannot be replayed
is refused with the path to it."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field

import pytest

from shipit.core.codec import CodecError, decode, encode
from shipit.core.fleet import CapacityPool, FleetState, ReplicaRecord, ReplicaState
from shipit.core.views import RequestView


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Inner:
    x: float
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outer:
    inner: Inner
    pairs: tuple[tuple[str, int], ...]
    colour: Colour | None
    maybe: float | None = None
    derived: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived", len(self.pairs) * 10)


def _roundtrip(value: object) -> object:
    return decode(json.loads(json.dumps(encode(value))))


def test_fleet_records_round_trip_exactly() -> None:
    rec = ReplicaRecord(
        "r1",
        "http://127.0.0.1:1",
        version="v2",
        pool=CapacityPool.SPOT,
        state=ReplicaState.DRAINING,
        state_since_s=0.1 + 0.2,  # not a short decimal: the repr must survive
        in_flight=3,
        kv_usage=1 / 3,
        adapters=frozenset({"sql", "chat"}),
        ejected_until_s=math.inf,
    )
    fleet = FleetState((rec, rec.evolve(replica_id="r2", adapters=frozenset())))
    assert _roundtrip(fleet) == fleet
    view = RequestView("q1", "default", "m", prefix_hashes=(1, 2**62), deadline_s=None)
    assert _roundtrip(view) == view


def test_nested_enums_optional_and_init_false_fields() -> None:
    value = Outer(Inner(2.5, frozenset({"a"})), (("a", 1), ("b", 2)), Colour.RED)
    back = _roundtrip(value)
    assert back == value
    assert isinstance(back, Outer) and back.derived == 20 and back.colour is Colour.RED


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (Outer(Inner(1.0), [("a", 1)], None), "$.pairs"),  # type: ignore[arg-type]
        (Outer(Inner(1.0), (("a", 1),), None, maybe={"k": 1}), "$.maybe"),  # type: ignore[arg-type]
        ((1, {2, 3}), "$[1]"),
    ],
)
def test_mutable_containers_are_refused_with_their_path(value: object, path: str) -> None:
    with pytest.raises(CodecError) as exc:
        encode(value)
    assert str(exc.value).startswith(path + ":")


def test_unknown_type_names_are_refused() -> None:
    with pytest.raises(CodecError, match="unknown record type"):
        decode({"$": "shipit.core.fleet:NoSuchThing"})
