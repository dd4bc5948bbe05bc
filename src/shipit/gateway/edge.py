"""What the gateway checks before it trusts a request's bytes: size, time, JSON shape, headers.

Owns reading a request body under a byte limit (``Content-Length`` over the limit is refused
before a byte is read; a body that grows past it is refused as soon as it does, never buffered
further) and a time limit, parsing JSON with a depth limit and without integers that no API
field can hold, reading an integer header within a range, and the ``EdgeError`` that carries a
refusal as an OpenAI error; and the filter that lists only a tenant's models in
``/v1/models``. The auth middleware (``gateway.auth``) calls these; it must not
know about keys.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from shipit.core import openai_errors as oe

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PARSED_BODY = "shipit.parsed_body"  # scope key: the body as the edge parsed it, parsed once
HEADERS = "shipit.headers"  # scope key: the forwarded headers as a str dict, built once
PRINCIPAL = "shipit.principal"  # scope key: the key's ``Principal`` (absent with keys off)
# Requests that are not one JSON request to a model: file uploads (multipart, up to
# jobs.max_file_bytes) and job management (batches, an async request's status or cancel).
NOT_MODEL_REQUESTS = ("/v1/files", "/v1/batches", "/v1/async/areq_")
MAX_INT = 2**63 - 1  # no field of the API holds more; larger values are refused, not sent on
_JSON = (b"content-type", b"application/json")


class EdgeError(Exception):
    """A refusal: an HTTP status with OpenAI's error body, and headers (``Retry-After``)."""

    def __init__(
        self,
        kind: oe.ErrorKind,
        message: str,
        *,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.headers = headers or []

    @property
    def status(self) -> int:
        return self.kind.status

    def body(self) -> bytes:
        return json.dumps(oe.error_body(self.message, self.kind, self.param)).encode()


async def send_error(send: Send, exc: EdgeError) -> None:
    body = exc.body()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *exc.headers]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _too_large(limit: int, seen: str) -> EdgeError:
    return EdgeError(
        oe.REQUEST_TOO_LARGE,
        f"the request body is {seen}, over the gateway's limit of {limit} bytes "
        "(gateway.limits.max_body_bytes); send a smaller request",
        param="body",
    )


def check_whole(content_length: str | None, whole: bytes, *, max_bytes: int) -> bytes:
    """A body that arrived whole, within the limits (``read_body``'s checks), or
    ``EdgeError``."""
    _check_declared(content_length, max_bytes)
    if len(whole) > max_bytes:
        raise _too_large(max_bytes, f"over {max_bytes} bytes")
    return whole


def _check_declared(content_length: str | None, max_bytes: int) -> None:
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise EdgeError(
                oe.INVALID_VALUE,
                f"Content-Length {content_length!r} is not an integer",
                param="content-length",
            ) from None
        if declared > max_bytes:
            raise _too_large(max_bytes, f"{declared} bytes (Content-Length)")


async def read_body(
    receive: Receive,
    content_length: str | None,
    *,
    max_bytes: int,
    timeout_s: float,
    whole: bytes | None = None,
) -> bytes:
    """The whole body, or ``EdgeError`` 413 (too large) / 408 (too slow). ``whole``: the
    server handed it over already (``DirectBody.take_body``), and only the limits are
    checked (``check_whole``)."""
    if whole is not None:
        return check_whole(content_length, whole, max_bytes=max_bytes)
    _check_declared(content_length, max_bytes)
    parts: list[bytes] = []
    size = 0
    # A timer that cancels this task, rather than ``asyncio.timeout``: per request, and this
    # is the hot path (the body nearly always arrives with the first message).
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if task is not None:
            task.cancel()

    loop = task.get_loop() if task is not None else asyncio.get_running_loop()
    timer = loop.call_later(timeout_s, expire)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes, f"over {max_bytes} bytes")
            parts.append(chunk)
            if not message.get("more_body"):
                break
    except asyncio.CancelledError:
        if not expired or task is None or task.uncancel() > 0:
            raise  # cancelled by someone else (the client left, the server stops)
        raise EdgeError(
            oe.REQUEST_TIMEOUT,
            f"the request body did not arrive within {timeout_s:g}s "
            "(gateway.limits.body_timeout_s); send it at once",
            param="body",
        ) from None
    finally:
        timer.cancel()
    return b"".join(parts)


def _bad_json(message: str, param: str | None = "body") -> EdgeError:
    return EdgeError(oe.INVALID_JSON, message, param=param)


class _IntOutOfRangeError(Exception):
    pass


def _checked_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_INT:
        raise _IntOutOfRangeError
    return value


_DECODER = json.JSONDecoder(parse_int=_checked_int)
_UTF8_BOM = b"\xef\xbb\xbf"
_FAST = msgspec.json.Decoder()
# Digits as b"0", everything else as a space: 19 zeros in a row is the shortest run that can
# spell an integer past 64 bits (or a long number in a string, which the checked parse then
# reads as it always did). A translate and a substring search, both in C.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def parse_json(body: bytes, *, max_depth: int) -> Any:
    """The body's JSON: objects and arrays nested at most ``max_depth`` deep, integers that fit
    in 64 bits. Anything else is a 400 naming what was wrong (never a 500).

    On the hot path this is one parse in C (msgspec) and two byte scans: one for a run of
    digits long enough to overflow 64 bits, one counting brackets (with no more than
    ``max_depth`` the JSON cannot nest deeper). A body either scan flags, or one msgspec
    refuses (it is stricter than Python's ``json``: no NaN, no byte-order mark, no lone
    surrogate), takes the checked path below, which accepts and refuses exactly what it
    always did."""
    if len(body) >= 2 and _LONG_RUN not in body.translate(_DIGITS):
        try:
            data = _FAST.decode(body)
        except (msgspec.DecodeError, RecursionError):
            pass
        else:
            if body.count(b"{") + body.count(b"[") <= max_depth:
                return data
    return _parse_checked(body, max_depth)


def _parse_checked(body: bytes, max_depth: int) -> Any:
    """``parse_json`` with Python's ``json``: integers range-checked as they are parsed, the
    nesting walked when the brackets could nest deeper than ``max_depth``. A refused integer
    is located by a second, slow walk."""
    try:
        if body[:4].count(0) or body[:3] == _UTF8_BOM:  # UTF-16/32 or a BOM: as json.loads
            data = json.loads(body, parse_int=_checked_int)
        else:  # UTF-8, the common case: one decoder built once, not one per request
            data = _DECODER.decode(body.decode("utf-8"))
    except _IntOutOfRangeError:
        data = None  # located below
    except RecursionError:
        raise _bad_json(f"the body is JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # includes integers with more digits than Python parses
        raise _bad_json(f"the body is not valid JSON: {exc}") from None
    if data is not None and body.count(b"{") + body.count(b"[") <= max_depth:
        return data
    if data is None:
        data = json.loads(body)
    _walk(data, max_depth)
    return data


def _walk(data: Any, max_depth: int) -> None:
    """Raise the 400 for the first value nested too deep or integer out of range, by path."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                raise _bad_json(
                    f"the body is JSON nested deeper than {max_depth} levels (at {where or '$'})"
                )
            stack.extend(
                (v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in value.items()
            )
        elif isinstance(value, list):
            if depth > max_depth:
                raise _bad_json(
                    f"the body is JSON nested deeper than {max_depth} levels (at {where or '$'})"
                )
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise EdgeError(
                oe.INVALID_VALUE,
                f"{where or 'the body'} is {value}, outside the 64-bit integer range "
                f"[{-MAX_INT}, {MAX_INT}]",
                param=where or "body",
            )


def int_in_range(raw: object, name: str, lo: int, hi: int, what: str) -> int:
    """``raw`` (a header string or a JSON value) as an integer in ``[lo, hi]``, else a 400 that
    names the value and the range."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise EdgeError(
            oe.INVALID_TYPE, f"{name} must be an integer in [{lo}, {hi}], got {raw!r}", param=name
        )
    try:
        value = int(raw) if isinstance(raw, str) and len(raw) <= 40 else raw
        if not isinstance(value, int):
            raise ValueError
    except ValueError:
        raise EdgeError(
            oe.INVALID_VALUE,
            f"{name} must be an integer in [{lo}, {hi}], got {str(raw)[:40]!r}",
            param=name,
        ) from None
    if not lo <= value <= hi:
        raise EdgeError(
            oe.INVALID_VALUE,
            f"{name} {value} is outside {what} [{lo}, {hi}]; send a value in that range",
            param=name,
        )
    return value


def models_filter(send: Send, allowed: tuple[str, ...]) -> Send:
    """``/v1/models`` lists only the models a tenant may use (a small JSON answer, buffered)."""
    start: Message = {}
    parts: list[bytes] = []

    async def filtered(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        parts.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(parts)
        try:
            data = json.loads(body)
            data["data"] = [m for m in data["data"] if m.get("id") in allowed]
            body = json.dumps(data).encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not the model list (an error): pass it through unchanged
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return filtered
