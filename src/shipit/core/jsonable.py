"""Plain JSON values from planner results: the one form ``--output json`` and the console share.

``jsonable`` flattens frozen dataclasses (field by field), dicts, tuples and lists, and rounds
floats to six decimals so a figure reads the same wherever it is shown. Unlike ``core.codec``
it is one-way (no type tags): it is for people and web pages, not for replay. Standard library
only, no IO.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [jsonable(x) for x in obj]
    if isinstance(obj, float):
        return round(obj, 6)
    return obj
