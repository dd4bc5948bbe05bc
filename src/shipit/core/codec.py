"""A lossless JSON form for the fleet model's records: snapshots, states and decisions.

Policies trade in frozen dataclasses made of numbers, strings, enums, tuples, frozensets and
other such dataclasses. ``encode`` turns one into plain JSON values with small type tags
(``{"$": "module:Class", ...}`` for a dataclass, ``{"$enum": ...}``, ``{"$set": [...]}``);
``decode`` rebuilds an equal object by importing the named classes. Floats round-trip exactly
(Python's JSON writes the shortest repr; infinities as ``Infinity``). Lists come back as
tuples: records must not hold lists, dicts or sets, and ``encode`` refuses them, naming the
path to the offending value, so a record that could not be replayed is caught where it is
written, not when a replay disagrees.

It imports only the standard library and does no IO.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any


class CodecError(ValueError):
    """A value that cannot be written or read as a replayable record."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name: str) -> Any:
    module, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CodecError(f"unknown record type {name!r}: {exc}") from exc
    return obj


def encode(value: Any, path: str = "$") -> Any:
    """``value`` as JSON-ready data; raises ``CodecError`` naming the path of what can't be."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return {"$enum": _name(type(value)), "value": encode(value.value, path)}
    if isinstance(value, tuple):
        return [encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, frozenset):
        items = [encode(v, f"{path}{{}}") for v in value]
        return {"$set": sorted(items, key=repr)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"$": _name(type(value))}
        for f in dataclasses.fields(value):
            out[f.name] = encode(getattr(value, f.name), f"{path}.{f.name}")
        return out
    raise CodecError(
        f"{path}: a {type(value).__name__} cannot be part of a replayable record; "
        "use tuples, frozensets and frozen dataclasses"
    )


def decode(data: Any) -> Any:
    """The object ``encode`` wrote ``data`` from."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return tuple(decode(v) for v in data)
    if isinstance(data, dict):
        if "$enum" in data:
            return _resolve(data["$enum"])(decode(data["value"]))
        if "$set" in data:
            return frozenset(decode(v) for v in data["$set"])
        if "$" in data:
            cls = _resolve(data["$"])
            kwargs = {k: decode(v) for k, v in data.items() if k != "$"}
            init = {f.name for f in dataclasses.fields(cls) if f.init}
            obj = cls(**{k: v for k, v in kwargs.items() if k in init})
            for k, v in kwargs.items():
                if k not in init:  # fields computed in __post_init__ or init=False
                    object.__setattr__(obj, k, v)
            return obj
    raise CodecError(f"not an encoded record: {data!r:.200}")
