"""The edge's JSON check: one parse on the hot path, the same refusals as a full walk."""

from __future__ import annotations

import json

import pytest

from shipit.gateway.edge import EdgeError, parse_json


def test_many_sibling_objects_are_not_mistaken_for_deep_nesting() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": str(i)} for i in range(100)]}
    assert parse_json(json.dumps(body).encode(), max_depth=4) == body


def test_nesting_past_the_limit_is_found_even_among_many_brackets() -> None:
    body = {"model": "m", "messages": [{} for _ in range(50)], "x": [[[[[1]]]]]}
    with pytest.raises(EdgeError, match=r"nested deeper than 4 levels \(at x\[0\]\[0\]\[0\]\)"):
        parse_json(json.dumps(body).encode(), max_depth=4)


def test_an_integer_out_of_range_is_refused_by_its_path() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":' + b"9" * 25 + b"}"
    with pytest.raises(EdgeError) as err:
        parse_json(raw, max_depth=32)
    assert err.value.status == 400 and err.value.param == "seed"


def test_integers_at_the_64_bit_bounds_pass() -> None:
    raw = b'{"a":9223372036854775807,"b":-9223372036854775807}'
    assert parse_json(raw, max_depth=32) == {"a": 2**63 - 1, "b": -(2**63 - 1)}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32-le"])
def test_bodies_in_other_unicode_encodings_parse_as_json_loads_parses_them(encoding: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "n": 2}
    assert parse_json(json.dumps(body).encode(encoding), max_depth=8) == body


def test_a_body_that_is_not_utf8_is_a_400_not_a_500() -> None:
    with pytest.raises(EdgeError, match="not valid JSON") as err:
        parse_json(b'{"model": "\xff\xfe\xfa"}', max_depth=8)
    assert err.value.status == 400


# What Python's json accepts and msgspec refuses (NaN, infinities, a lone surrogate, a BOM)
# and what neither accepts must come out of the fast path exactly as the checked one gives it.
EDGE_CASES = [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": 1e400}',
    b'{"a": "\\ud800"}',
    b'\xef\xbb\xbf{"a": 1}',
    b'{"a": 1, "a": 2}',
    b'{"a": "' + b"1" * 30 + b'"}',
    b'{"a": 9223372036854775808}',
    b'{"a": -9223372036854775808}',
    b'{"a": [[[[[1]]]]]}',
    b'  {"a" : -0, "b": 1E5, "c": null, "d": [true, false]}  ',
    b"[1, 2]",
    b'"x"',
    b"1",
    b"",
    b"{",
    b'{"a": "\xff"}',
    b'{"a": 1}garbage',
]


def _outcome(call: object) -> object:
    try:
        return ("ok", repr(call()))  # type: ignore[operator]
    except EdgeError as exc:
        return ("refused", exc.status, exc.param, str(exc))


@pytest.mark.parametrize("raw", EDGE_CASES)
def test_the_fast_parse_accepts_and_refuses_what_the_checked_parse_does(raw: bytes) -> None:
    from shipit.gateway.edge import _parse_checked

    fast = _outcome(lambda: parse_json(raw, max_depth=4))
    checked = _outcome(lambda: _parse_checked(raw, 4))
    assert fast == checked


def test_python_json_extensions_still_parse() -> None:
    assert repr(parse_json(b'{"a": NaN}', max_depth=4)) == "{'a': nan}"
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', max_depth=4) == {"a": 1}
