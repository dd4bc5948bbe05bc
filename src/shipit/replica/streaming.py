"""Streaming and disconnect plumbing at the ASGI edge.

Owns ``SSEResponse`` (sends events as they come, stops and closes the event source the
moment the client disconnects or the serving task is cancelled, then reports completion) and
``race_disconnect`` (run a coroutine unless the client goes away first). Closing the event
source closes the engine stream under it, which aborts the request and frees its KV blocks.
It must not know about OpenAI formats or the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the request body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def race_disconnect(work: Awaitable[T], receive: Receive) -> tuple[bool, T | None]:
    """``(True, result)`` if ``work`` finished first; ``(False, None)`` if the client left
    first, in which case ``work`` is cancelled (and awaited) before returning."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False, None
    return True, task.result()


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        # Not Response.__init__: it would add ``content-length: 0``.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self._events = events
        self._on_close = on_close

    async def _pump(self, send: Send) -> None:
        async for chunk in self._events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump: asyncio.Future[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            pump = asyncio.ensure_future(self._pump(send))
            watch = asyncio.ensure_future(wait_disconnect(receive))
            try:
                await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watch.cancel()
                if not pump.done():
                    pump.cancel()
                    await asyncio.wait({pump})
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
            self._on_close()
        if not pump.cancelled() and (error := pump.exception()) is not None:
            raise error
