"""Body chunks written straight to the client's connection, past the ASGI ``send``.

A streamed answer costs the gateway a few microseconds of Python per token, and most of it was
the way a chunk travelled: the upstream connection's read callback woke a future, the request's
task resumed through three async generators, built an ASGI message and awaited the server's
``send``, which framed the chunk and wrote it. ``DirectBody`` lets the request core hand each
chunk from the upstream connection's read callback to the client connection in one call: it
frames the chunk for HTTP/1.1 chunked transfer exactly as uvicorn's ``send`` does and writes it
to the same transport, and reports when the client is behind (uvicorn's flow control paused
writing) so that reading from the replica pauses.

The response head and the end of the body can go the same way (``start``, ``finish``): they
write what uvicorn's ``send`` writes for a chunked response and keep uvicorn's record of the
response (started, chunked, complete, keep-alive) true, without its per-header checks on the
headers the gateway made itself (the values are still checked, in one pass). Where that is not
so (a HEAD request, a 204 or 304, an access log to write, a client that is behind, or a wrapper
that must see the head) they return False and the caller goes through ``send``.
``GuardedHttpToolsProtocol`` attaches one to each request's scope under ``DIRECT_BODY``; a
front door uses it only when the ``send`` it was given is the server's own (no middleware wraps
it: a wrapper that rewrites the body must see every chunk; one that only watches it, as the
edge's metering does, hands on an ``observed`` writer that shows it each chunk) and, for body
chunks, once the head is out with chunked framing (``ready``). It must not be used for anything
but a response under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE, STATUS_LINE

from shipit.gateway.coalesce import CoalescingTransport

__all__ = ["DIRECT_BODY", "DirectBody"]

DIRECT_BODY = "shipit.direct_body"  # the scope["extensions"] key


class DirectBody:
    __slots__ = ("_cycle", "_gone", "loop")

    def __init__(self, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._cycle = cycle  # uvicorn's RequestResponseCycle of this request
        self.loop = loop  # the connection's (``asyncio.current_task(loop)`` makes no syscall)
        self._gone: Callable[[], None] | None = None

    def body_complete(self) -> bool:
        """The whole request body has arrived: the next ``receive`` returns it at once."""
        c = self._cycle
        return not c.more_body and not c.disconnected

    def take_body(self) -> bytes | None:
        """The whole request body, handed over as the server's ``receive`` would hand it (and
        no longer there for it), when all of it has arrived; None when it has not (or a
        ``100 Continue`` is still to be sent): then ``receive`` reads it."""
        c = self._cycle
        if c.more_body or c.disconnected or c.response_complete or c.waiting_for_100_continue:
            return None
        body = bytes(c.body)
        c.body = bytearray()
        c.message_event.clear()
        c.flow.resume_reading()
        return body

    def on_client_gone(self, callback: Callable[[], None]) -> None:
        """``callback()`` once, when the client's connection is lost before the response
        completed (at once if it is already): what a task awaiting ``receive`` for
        ``http.disconnect`` would learn, without a task per request. Reading from the
        client resumes, as such a ``receive`` does, so that its going is seen."""
        c = self._cycle
        if c.disconnected:
            callback()
            return
        self._gone = callback
        c.flow.resume_reading()

    def client_gone(self) -> None:
        """Called by the protocol when the connection is lost (see ``on_client_gone``)."""
        callback, self._gone = self._gone, None
        if callback is not None and self._cycle.disconnected:
            callback()

    def serves(self, send: Any) -> bool:
        """Whether ``send`` is this request's own server ``send`` (not a wrapper)."""
        return bool(send == self._cycle.send)

    def ready(self) -> bool:
        """The head is sent with chunked framing and the body is not finished."""
        c = self._cycle
        return bool(
            c.response_started
            and not c.response_complete
            and c.chunked_encoding is True
            and not c.disconnected
        )

    def start(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> bool:
        """The response head, chunked, as uvicorn's ``send`` would write it; False (nothing
        written) where ``send`` must do it. ``headers`` are the gateway's own: lower-case
        names it chose, never ``content-length``, ``transfer-encoding`` or ``connection``."""
        c = self._cycle
        if (
            c.response_started
            or c.disconnected
            or c.access_log
            or c.flow.write_paused
            or status in (204, 304)
            or c.scope["method"] == "HEAD"
        ):
            return False
        if HEADER_VALUE_RE.search(b" ".join([v for _, v in headers])):
            return False  # let send refuse it as it does
        content = [STATUS_LINE[status]]
        for name, value in (*c.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        if not c.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"transfer-encoding: chunked\r\n\r\n")
        c.response_started = True
        c.waiting_for_100_continue = False
        c.chunked_encoding = True
        c.transport.write(b"".join(content))
        return True

    def finish(self) -> bool:
        """The end of a chunked body, as uvicorn's last ``send`` would write it (the response
        complete, the connection closed if it is not kept alive, the server told); False
        where ``send`` must do it."""
        c = self._cycle
        if not self.ready() or c.flow.write_paused:
            return False
        t = c.transport
        # What this iteration wrote of the answer (its head, its chunks) and its end leave in
        # one write, now rather than after whatever else the iteration still runs.
        (t.write_now if type(t) is CoalescingTransport else t.write)(b"0\r\n\r\n")
        c.response_complete = True
        c.message_event.set()
        if not c.keep_alive:
            c.transport.close()
        c.on_response()
        return True

    def write(self, chunk: bytes) -> bool:
        """One body chunk to the client; True when the client is behind (writing paused)."""
        c = self._cycle
        if c.disconnected or not chunk:
            return False
        t = c.transport
        # A coalescing transport (``gateway.coalesce``) writes a lone chunk at once.
        write = t.write_through if type(t) is CoalescingTransport else t.write
        write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return bool(c.flow.write_paused)

    async def drain(self) -> None:
        """Until the client has taken enough of what was written (or has gone)."""
        c = self._cycle
        if c.flow.write_paused and not c.disconnected:
            await c.flow.drain()

    def observed(
        self, send: Any, wrapper: Any, observe: Callable[[bytes], None]
    ) -> DirectBody | None:
        """For middleware that wraps ``send`` only to watch the body go by (the edge's
        metering): the direct writer to hand on with ``wrapper``, calling ``observe`` with
        each chunk before writing it. None when ``send`` is not the server's own (then
        nothing may go past it)."""
        if not self.serves(send):
            return None
        return _Observed(self, wrapper, observe)


class _Observed(DirectBody):
    __slots__ = ("_base", "_observe", "_wrapper")

    def __init__(self, base: DirectBody, wrapper: Any, observe: Callable[[bytes], None]) -> None:
        super().__init__(base._cycle, base.loop)
        self._base, self._wrapper, self._observe = base, wrapper, observe

    def on_client_gone(self, callback: Callable[[], None]) -> None:
        self._base.on_client_gone(callback)  # the protocol tells the one it attached

    def serves(self, send: Any) -> bool:
        return bool(send == self._wrapper)

    def start(self, status: int, headers: tuple[tuple[bytes, bytes], ...]) -> bool:
        return False  # the wrapper adds headers of its own (rate limits): through send

    def finish(self) -> bool:
        return False  # the wrapper sees the end of the answer: through send

    def write(self, chunk: bytes) -> bool:
        self._observe(chunk)
        return super().write(chunk)
