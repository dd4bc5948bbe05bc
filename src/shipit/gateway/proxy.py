"""The HTTP/SSE front door of the hot path: one OpenAI request's events written as ASGI messages.

``gateway.request_core.RequestCore`` does the work (admission, the lease, retries before the
first byte, failover, relay, accounting) and yields events; ``Proxy.forward`` writes them:
``Started`` as the response start, each ``bytes`` chunk as it arrives (the one ending in
``data: [DONE]`` ends the response), ``Rejected``/``Failed`` as a JSON error (with
``Retry-After`` when given), ``BrokenMidStream`` as an SSE error event, and ``Held`` as a 200
``text/event-stream`` start then an SSE keep-alive comment per event, so that clients and
proxies keep the connection open through a cold start. Once that 200 is sent a status cannot
change: a later error goes as an SSE error event carrying the status as its code. A client
disconnect cancels the handler; closing the event iterator then aborts the upstream and gives
the slot back. Raw ASGI on purpose: no framework on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from shipit.config.upstream_auth import UpstreamHeaders
from shipit.core.views import RequestView
from shipit.gateway.direct import DirectBody
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.request_core import (
    Begun,
    BrokenMidStream,
    Failed,
    Finished,
    Held,
    Rejected,
    RequestCore,
    Started,
)
from shipit.services.monitor import AdapterLoader
from shipit.services.router import RouterService
from shipit.services.upstream import Upstream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DONE_TAIL = b"data: [DONE]\n\n"
KEEPALIVE = b": waiting for a replica to start\n\n"
_HELD = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-shipit-held", b"cold-start"),
]
_JSON = (b"content-type", b"application/json")
__all__ = ["KEEPALIVE", "Guard", "Outcome", "Proxy", "read_whole", "send_json"]


async def read_whole(receive: Receive) -> bytes:
    """A request's body, every ``http.request`` message of it."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass(slots=True)
class Outcome:
    status: int
    policy: str = "-"


class Proxy:
    """Writes ``RequestCore`` events to an ASGI ``send``."""

    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        upstream: Callable[[], Upstream],
        adapters: Callable[[], AdapterLoader],
        now: Callable[[], float],
        upstream_headers: Mapping[str, UpstreamHeaders] | None = None,
    ) -> None:
        self.core = RequestCore(
            metrics=metrics,
            upstream=upstream,
            adapters=adapters,
            now=now,
            upstream_headers=upstream_headers,
        )
        self.metrics = metrics

    async def forward(
        self,
        view: RequestView,
        body: bytes,
        router: RouterService,
        send: Send,
        guard: Guard,
        direct: DirectBody | None = None,
        begun: Begun | None = None,
    ) -> Outcome:
        """``direct``, the server's way to write body chunks past ``send``, is used when
        ``send`` is the server's own: each chunk then goes from the replica's connection to
        the client's in one callback (``gateway.direct``). ``begun``: the first placement, made
        already (``RequestCore.begin``)."""
        outcome = Outcome(499)
        sink = _Sink(direct, guard) if direct is not None and direct.serves(send) else None
        events = self.core.run(view, body, router, sink, begun)
        async with aclosing(events):
            async for ev in events:
                if type(ev) is bytes:
                    if ev.endswith(DONE_TAIL):
                        guard.active = False
                        await send({"type": "http.response.body", "body": ev, "more_body": False})
                        guard.ended = True
                    else:
                        await send({"type": "http.response.body", "body": ev, "more_body": True})
                elif isinstance(ev, Started):
                    if not guard.started:
                        guard.started = True
                        if sink is None or not sink.start(ev.status, ev.headers):
                            await send(
                                {
                                    "type": "http.response.start",
                                    "status": ev.status,
                                    "headers": list(ev.headers),
                                }
                            )
                elif isinstance(ev, Finished):
                    if not guard.ended:
                        guard.active = False
                        guard.ended = True
                        if sink is None or not sink.finish():
                            end = {"type": "http.response.body", "body": b"", "more_body": False}
                            await send(end)
                    outcome = Outcome(ev.status, ev.policy)
                elif isinstance(ev, Held):
                    if not guard.started:
                        guard.started = True
                        await send({"type": "http.response.start", "status": 200, "headers": _HELD})
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                elif isinstance(ev, Rejected):
                    extra = (
                        [(b"retry-after", str(ev.retry_after_s).encode())]
                        if ev.retry_after_s
                        else []
                    )
                    await _reply_error(send, guard, ev.status, ev.body, extra)
                elif isinstance(ev, Failed):
                    await _reply_error(send, guard, ev.status, ev.body, [])
                elif isinstance(ev, BrokenMidStream):
                    guard.active = False
                    guard.ended = True
                    tail = b"data: " + ev.body + b"\n\n" + DONE_TAIL if view.stream else b""
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
        return outcome


async def _reply_error(
    send: Send, guard: Guard, status: int, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    """A JSON error, or an SSE error event when a held stream's 200 is already sent (a
    status cannot change after the headers); the event carries the status as its code."""
    guard.ended = True
    if not guard.started:
        guard.started = True
        await send_json(send, status, body, extra)
        return
    guard.active = False
    event = b"data: " + body + b"\n\n" + DONE_TAIL
    await send({"type": "http.response.body", "body": event, "more_body": False})


class _Sink:
    """The request core's body sink over ``DirectBody``: the chunk that ends the stream
    (``data: [DONE]``) also turns the guard off, as ``forward`` does for a chunk it sends."""

    __slots__ = ("_direct", "_guard")

    def __init__(self, direct: DirectBody, guard: Guard) -> None:
        self._direct, self._guard = direct, guard

    def ready(self) -> bool:
        return self._direct.ready()

    def start(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> bool:
        return self._direct.start(status, headers)

    def finish(self) -> bool:
        return self._direct.finish()

    def write(self, chunk: bytes) -> bool:
        if chunk.endswith(DONE_TAIL):
            self._guard.active = False
        return self._direct.write(chunk)

    async def drain(self) -> None:
        await self._direct.drain()

    def end(self) -> None:
        self._guard.active = False
        if self._direct.finish():
            self._guard.ended = True  # the Finished event then has nothing left to send


@dataclass(slots=True)
class Guard:
    """Whether a client disconnect may still cancel the handler (off once the last byte is
    handed to the server, which then reports a disconnect of its own)."""

    active: bool = True
    started: bool = False  # response headers sent (while held, or for the answer)
    ended: bool = False  # the last body message sent
