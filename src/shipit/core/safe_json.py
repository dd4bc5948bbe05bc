"""Request bodies decoded as strict JSON, so bad input is a 400 and never reaches the engine.

Owns the checks ``json.loads`` alone does not make: nesting deeper than ``MAX_DEPTH`` (a
50,000-deep array would otherwise exhaust the interpreter's recursion limit, here or in a
schema compiler later), ``NaN``/``Infinity`` and numbers that overflow to infinity (not JSON),
integers longer than Python converts (``ValueError`` from the digit limit), and strings with lone
UTF-16 surrogates (``"\\ud800"``: valid JSON escapes, but not text, so no tokenizer can encode
them). Every refusal is an ``InvalidRequestError`` that says where the problem is. It must not
know about request models or HTTP.
"""

from __future__ import annotations

import json
import math
from typing import Any

from shipit.core.errors import InvalidRequestError

MAX_DEPTH = 64  # arrays and objects; OpenAI bodies nest a handful of levels, schemas a few more


def _refuse_constant(name: str) -> Any:
    raise InvalidRequestError(
        f"the request body is not valid JSON: {name} is not a JSON number; send a finite number",
        code="invalid_json",
    )


def loads(raw: bytes | str) -> Any:
    """``raw`` as JSON, or an ``InvalidRequestError`` (code ``invalid_json`` or
    ``invalid_value``) naming what is wrong and where."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidRequestError(
            f"the request body nests arrays/objects too deeply; at most {MAX_DEPTH} levels "
            "are accepted",
            code="invalid_json",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    except ValueError as exc:  # e.g. an integer past sys.get_int_max_str_digits()
        raise InvalidRequestError(
            f"the request body holds a number this server cannot read ({exc}); "
            "send numbers in their usual ranges",
            code="invalid_json",
        ) from exc
    if isinstance(data, dict | list):
        check(data)
    elif isinstance(data, str):
        _check_text(data, ())
    elif isinstance(data, float) and not math.isfinite(data):
        _not_finite(data, ())
    return data


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
    return out or "the body"


def check(data: Any) -> None:
    """Refuse nesting past ``MAX_DEPTH``, non-finite floats and lone surrogates (iteratively,
    so the check itself cannot recurse too deeply). Scalars are checked where they sit, so a
    long list of token ids costs one pass without building a path per element."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if len(where) >= MAX_DEPTH:
            raise InvalidRequestError(
                f"{_path(where)}: the request body nests arrays/objects deeper than "
                f"{MAX_DEPTH} levels; flatten it",
                field=_field(where),
                code="invalid_value",
            )
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in pairs:
            if isinstance(key, str) and not key.isascii():
                _check_text(key, where)
            kind = type(item)
            if kind is int or kind is bool or item is None:
                continue
            if kind is str:
                if not item.isascii():
                    _check_text(item, (*where, key))
            elif kind is float:
                if not math.isfinite(item):
                    _not_finite(item, (*where, key))
            else:  # a list or an object
                stack.append((item, (*where, key)))


def _not_finite(value: float, where: tuple[str | int, ...]) -> None:
    raise InvalidRequestError(
        f"{_path(where)}: number out of range (it overflows to {value}); send a finite number",
        field=_field(where),
        code="invalid_value",
    )


def _field(where: tuple[str | int, ...]) -> str | None:
    return str(where[0]) if where else None


def _check_text(text: str, where: tuple[str | int, ...]) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise InvalidRequestError(
            f"{_path(where)}: the string holds a lone UTF-16 surrogate (\\u{ord(bad):04x} at "
            f"character {exc.start}), which is not text; send valid Unicode (surrogates only "
            "in pairs)",
            field=_field(where),
            code="invalid_value",
        ) from None
