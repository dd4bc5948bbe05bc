"""Body chunks written straight to the client's connection, past the ASGI ``send``.

A streamed answer costs the gateway a few microseconds of Python per token, and most of it was
the way a chunk travelled: the upstream connection's read callback woke a future, the request's
task resumed through three async generators, built an ASGI message and awaited the server's
``send``, which framed the chunk and wrote it. ``DirectBody`` lets the request core hand each
chunk from the upstream connection's read callback to the client connection in one call: it
frames the chunk for HTTP/1.1 chunked transfer exactly as uvicorn's ``send`` does and writes it
to the same transport, and reports when the client is behind (uvicorn's flow control paused
writing) so that reading from the replica pauses.

Only the response head and the end of the body go through ``send``, so uvicorn's record of the
response (started, chunked, complete, keep-alive) stays true. ``GuardedHttpToolsProtocol``
attaches one to each request's scope under ``DIRECT_BODY``; a front door uses it only when the
``send`` it was given is the server's own (no middleware wraps it: a wrapper that rewrites the
body must see every chunk; one that only watches it, as the edge's metering does, hands on an
``observed`` writer that shows it each chunk) and once the head is out with chunked framing
(``ready``). It must not be used for anything but a response body under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

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

    def write(self, chunk: bytes) -> bool:
        self._observe(chunk)
        return super().write(chunk)
