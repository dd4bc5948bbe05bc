"""``fast_init``: the same records as the dataclass's own ``__init__``, still frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field

import pytest

from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.frozen import fast_init


@dataclass(frozen=True, slots=True)
class _Plain:
    a: str
    b: int = 3
    c: tuple[int, ...] = field(default_factory=lambda: (1, 2))
    d: float = field(default=0.5, kw_only=True)


@fast_init
@dataclass(frozen=True, slots=True)
class _Fast:
    a: str
    b: int = 3
    c: tuple[int, ...] = field(default_factory=lambda: (1, 2))
    d: float = field(default=0.5, kw_only=True)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("x",), {}),
        (("x", 5), {}),
        (("x",), {"c": (9,)}),
        (("x", 1, (4,)), {"d": 2.0}),
        ((), {"a": "y"}),
    ],
)
def test_the_same_values_as_the_generated_init(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    want = _Plain(*args, **kwargs)
    got = _Fast(*args, **kwargs)
    assert dataclasses.astuple(got) == dataclasses.astuple(want)


def test_the_same_refusals_for_missing_or_extra_arguments() -> None:
    with pytest.raises(TypeError):
        _Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Fast("x", 1, (), 2.0)  # type: ignore[misc]  # d is keyword-only
    with pytest.raises(TypeError):
        _Fast("x", e=1)  # type: ignore[call-arg]


def test_a_factory_default_is_called_for_each_record() -> None:
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Holder:
        items: list[int] = field(default_factory=list)

    one, two = Holder(), Holder()
    one.items.append(1)
    assert two.items == []


def test_records_stay_frozen() -> None:
    record = ReplicaRecord("r0", "http://127.0.0.1:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.in_flight = 3  # type: ignore[misc]
    moved = record.evolve(in_flight=3, state=ReplicaState.DRAINING)
    assert (moved.in_flight, moved.state, record.in_flight) == (3, ReplicaState.DRAINING, 0)
    want = ReplicaRecord("r0", "http://127.0.0.1:1", in_flight=3, state=ReplicaState.DRAINING)
    assert moved == want


def test_classes_it_cannot_keep_equal_are_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Later:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int] = 0

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Later, WithInitVar, NoSlots):
        with pytest.raises(TypeError):
            fast_init(cls)
