"""The replica's outermost ASGI layer: what no bad request may get past.

Owns three rules for every HTTP request, whatever route serves it: a body larger than
``max_body_bytes`` is refused with 413 before a handler sees it (by ``Content-Length`` at once,
else while reading, so a chunked upload cannot grow past the limit); an exception no handler
caught becomes an OpenAI-shaped 500 instead of Starlette's plain-text page; and every 5xx
carries ``Connection: close``, so a pooled client connection that saw a failure is not reused
for the next, innocent request. Every 4xx/5xx response (not a client's own disconnect, 499)
is counted in ``shipit_replica_errors_total`` by status and code. It must not know about routes
or the engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipit.core import openai_errors as oe

log = logging.getLogger("shipit.replica")

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


def _error_messages(kind: oe.ErrorKind, message: str, *, close: bool) -> tuple[Message, Message]:
    body = json.dumps(oe.error_body(message, kind)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": kind.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def _code_of(status: int, body: bytes) -> str:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return f"http_{status}"
    return str(code)


class Guard:
    """Wraps the replica's Starlette app (``replica.app.create_app`` installs it)."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, on_error: Callable[[int, str], None]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"status": 0, "body": b""}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = status = int(message["status"])
                if status >= 500 and not any(k == b"connection" for k, _ in message["headers"]):
                    message = {
                        **message,
                        "headers": [*message["headers"], (b"connection", b"close")],
                    }
            elif message["type"] == "http.response.body" and state["status"] >= 400:
                if len(state["body"]) < 4096:
                    state["body"] += message.get("body", b"")
                if not message.get("more_body", False) and state["status"] != 499:
                    self.on_error(state["status"], _code_of(state["status"], state["body"]))
            await send(message)

        if scope["method"] in _BODY_METHODS:
            body = await self._read_body(scope, receive, counted)
            if body is None:
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, counted)
        except Exception as exc:
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if state["status"]:
                raise  # the response had started: the server drops the connection
            start, body_message = _error_messages(
                oe.INTERNAL_ERROR,
                f"the replica failed on this request ({type(exc).__name__}); this is a bug, "
                "not the request's fault; retry, and report it if it persists",
                close=True,
            )
            await counted(start)
            await counted(body_message)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` after answering 413 (or if the client left)."""
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(send, declared.decode("latin-1"))
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, f"more than {limit}")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, size: str) -> None:
        start, body = _error_messages(
            oe.REQUEST_TOO_LARGE,
            f"the request body is {size} bytes; this replica accepts at most "
            f"{self.max_body_bytes} bytes (--max-body-bytes); send a shorter prompt",
            close=True,  # the rest of the body was not read: the connection cannot be reused
        )
        await send(start)
        await send(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body already read, then the client's own messages
    (a disconnect, later)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
