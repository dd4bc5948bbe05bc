"""A pooled HTTP/1.1 client for the hot path: one proxied request to a replica over plain HTTP.

``H1Pool.open`` sends a POST on a kept-alive connection (a new one when none is idle; on an
idle one it is written when ``open`` is called, before the caller awaits), waits for
the status line and headers under the first-byte timeout, and hands back an ``H1Response``
whose ``chunks`` yield the body as it arrives (chunked transfer decoded by ``httptools``), each
read bounded by ``read_timeout_s``. A connection goes back to the pool only when its response
was read to the end and the replica did not ask to close it; an idle one is dropped after
``idle_s`` (below the 5 s keep-alive of uvicorn-based replicas such as vLLM, so a request is
never written to a connection the replica is closing). Reading pauses when the client falls
more than ``high_water`` bytes behind. Errors map as in ``AiohttpUpstream``: ``UpstreamError``
("connect", "timeout", "protocol") before the first byte, ``MidStreamError`` after.

Why not aiohttp here: per request aiohttp builds a request object, a payload, a response object
and a stream reader with its own timers; this does one write and one parser callback per read,
and profiling showed the upstream request as the largest single cost of the gateway's hot path.
HTTPS replicas, and the control calls (health, metrics, admin), stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import httptools

from shipit.services.upstream import MidStreamError, UpstreamError

_Key = tuple[str, int]


class _Conn(asyncio.Protocol):
    """One connection's response parsing: headers, body chunks, completion, loss."""

    def __init__(self, pool: H1Pool, key: _Key) -> None:
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.status = 0
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.lost: BaseException | None = None
        self.closed = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        # The wait's deadline (loop time), and the connection's one timer for it: set once
        # and checked when it fires (``wait``), not set and cancelled for every wait.
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        # While ``H1Response.relay`` runs: the body parsed from each read goes to ``sink`` as
        # one chunk (True back: the consumer is behind, reading pauses); ``last_read_s`` dates
        # the last body bytes, for the read timeout, checked lazily.
        self.sink: Callable[[bytes], bool] | None = None
        self.sink_error: BaseException | None = None
        self.last_read_s = 0.0

    # ----- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()  # once per connection, not once per wait

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()
        if not self.body:
            return
        if self.sink is not None:
            self._deliver()  # what this read parsed, as one chunk
            return
        # Once per read, not per chunk (a read may hold a whole answer's events): the bytes
        # read count toward the pause (framing included, a little over the body), and whoever
        # waits for the body is woken.
        self.buffered += len(data)
        if self.buffered > self.pool.high_water and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stop_timer()
        if not self.complete:
            self._fail(exc or ConnectionResetError("the replica closed the connection"))
        self._wake()

    # ----- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here: llhttp answers for the message being parsed, not after it completes.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)  # handed on once the read is parsed (``data_received``)

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # ----- helpers ----------------------------------------------------------------------------
    def take_body(self) -> bytes:
        """Everything parsed since the last take, as one chunk (as aiohttp's ``iter_any``
        does): fewer, larger writes to the client under load."""
        body = self.body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        return data

    def _deliver(self) -> None:
        sink = self.sink
        assert sink is not None
        data = self.take_body()
        if self.loop is not None:
            self.last_read_s = self.loop.time()
        try:
            behind = sink(data)
        except Exception as exc:  # the consumer's fault, not the replica's: relay raises it
            self.sink, self.sink_error = None, exc
            self._wake()
            return
        if behind and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
            self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout_s: float | None) -> None:
        """Until the parser or the connection says something, or ``TimeoutError`` after
        ``timeout_s``. A plain timer on the waiter, cheaper than ``asyncio.timeout`` (no task
        cancellation to undo), and one a connection: it stays set between waits, and when it
        fires it expires the wait under way only if that wait's deadline has passed, else it
        is set again for what is left of it (a call_later and a cancel saved per request)."""
        loop = self.loop or asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        if timeout_s is None:
            self.deadline = None
        else:
            deadline = self.deadline = loop.time() + timeout_s
            timer = self.timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self.timer = loop.call_later(timeout_s, self._due)
        try:
            await waiter
        finally:
            self.waiter = None

    def _due(self) -> None:
        self.timer = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None or self.closed:
            return  # nothing waits (or not for long): set again by the next wait
        loop = self.loop or asyncio.get_running_loop()
        left_s = deadline - loop.time()
        if left_s > 0:
            self.timer = loop.call_later(left_s, self._due)
        else:
            waiter.set_exception(TimeoutError())

    def stop_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()

    def reset(self) -> None:
        """Ready for the next request on this connection. Only a connection whose last
        response completed is reused, so its parser is at a message boundary and parses the
        next response as it is (llhttp keeps parsing messages on a kept-alive connection)."""
        self.headers, self.status = {}, 0
        self.body.clear()
        self.buffered = 0
        self.headers_done = self.complete = self.keep_alive = False
        self.lost = None
        self.sink = self.sink_error = None


class H1Response:
    __slots__ = ("_conn", "_done", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        read_timeout_s = conn.pool.read_timeout_s
        while True:
            if conn.body:
                data = conn.take_body()
                if conn.paused and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                yield data
                continue
            if conn.complete:
                return
            if conn.lost is not None:
                raise MidStreamError(f"{type(conn.lost).__name__}: {conn.lost}")
            try:
                await conn.wait(read_timeout_s)
            except TimeoutError:
                raise MidStreamError(f"no data from the replica in {read_timeout_s:g}s") from None

    async def relay(
        self, deliver: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]
    ) -> None:
        """Every body chunk to ``deliver`` as the connection parses it, until the response
        ends; ``MidStreamError`` as ``chunks`` raises it. ``deliver`` runs in the connection's
        read callback, so a chunk costs no future, no task switch and no timer; it returns
        True when its consumer is behind: reading pauses until ``drain`` returns. The read
        timeout is checked lazily, against the time of the last read. An exception from
        ``deliver`` ends the relay and is raised here."""
        conn = self._conn
        loop = conn.loop or asyncio.get_running_loop()
        read_timeout_s = conn.pool.read_timeout_s
        conn.last_read_s = loop.time()
        conn.sink = deliver  # from now on each read is delivered in the read callback
        try:
            while True:
                if conn.sink_error is not None:
                    raise conn.sink_error
                if conn.body:  # parsed before the relay began (with the headers, say)
                    if deliver(conn.take_body()):
                        await drain()  # reads meanwhile are delivered after this one, in order
                    continue
                if conn.complete:
                    return
                if conn.lost is not None:
                    raise MidStreamError(f"{type(conn.lost).__name__}: {conn.lost}")
                if conn.paused:
                    await drain()
                    conn.paused = False
                    conn.last_read_s = loop.time()
                    if conn.transport is not None:
                        conn.transport.resume_reading()
                    continue
                left_s = conn.last_read_s + read_timeout_s - loop.time()
                if left_s <= 0:
                    raise MidStreamError(f"no data from the replica in {read_timeout_s:g}s")
                try:
                    await conn.wait(left_s)
                except TimeoutError:
                    continue  # data may have come meanwhile: checked against last_read_s
        finally:
            conn.sink = None

    def close(self) -> None:
        """Abort: the replica sees the connection drop."""
        if not self._done:
            self._done = True
            self._conn.pool.discard(self._conn)

    def release(self) -> None:
        """Read to the end: the connection may serve the next request."""
        if not self._done:
            self._done = True
            self._conn.pool.give_back(self._conn)


class H1Pool:
    def __init__(
        self,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 300.0,
        idle_s: float = 4.0,
        high_water: int = 1 << 20,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle_s = idle_s
        self.high_water = high_water
        self._idle: dict[_Key, list[_Conn]] = {}
        self._targets: dict[str, tuple[_Key, str]] = {}
        self._open: set[_Conn] = set()

    def open(
        self, url: str, body: bytes, headers: Mapping[str, str], *, first_byte_timeout_s: float
    ) -> Awaitable[H1Response]:
        """The response, to await. The request is written now, in the caller's callback,
        when a kept-alive connection is idle (the gateway's early start relies on it), else
        once a new connection is made. Await what this returns: a request written and never
        awaited holds its connection."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        key, start = target
        head = [start]
        head += [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length"]
        head.append(f"content-length: {len(body)}\r\n\r\n")
        request = "".join(head).encode("latin-1") + body
        conn = self._pooled(key)
        if conn is None:
            return self._connect_and_send(key, request, first_byte_timeout_s)
        assert conn.transport is not None
        conn.transport.write(request)
        return self._response(conn, first_byte_timeout_s)

    async def _connect_and_send(
        self, key: _Key, request: bytes, first_byte_timeout_s: float
    ) -> H1Response:
        conn = await self._connection(key)
        assert conn.transport is not None
        conn.transport.write(request)
        return await self._response(conn, first_byte_timeout_s)

    async def _response(self, conn: _Conn, first_byte_timeout_s: float) -> H1Response:
        """Until the head of the answer to the request written on ``conn``."""
        loop = conn.loop or asyncio.get_running_loop()
        deadline = loop.time() + first_byte_timeout_s
        try:
            while not conn.headers_done:
                if conn.lost is not None:
                    self.discard(conn)
                    raise UpstreamError("protocol", f"{type(conn.lost).__name__}: {conn.lost}")
                await conn.wait(max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.discard(conn)
            raise UpstreamError("timeout", f"no response in {first_byte_timeout_s:g}s") from None
        except BaseException:
            self.discard(conn)
            raise
        return H1Response(conn)

    def _target(self, url: str) -> tuple[_Key, str]:
        """Where ``url`` connects and its request line and host header, parsed once a URL
        (a fleet has a few replicas and paths; the memo is cleared if it ever grows large)."""
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = parts.path + ("?" + parts.query if parts.query else "")
        if len(self._targets) >= 4096:
            self._targets.clear()
        target = self._targets[url] = (key, f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n")
        return target

    def _pooled(self, key: _Key) -> _Conn | None:
        """An idle kept-alive connection to ``key`` still fit for use, made ready; or none."""
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_s:
                    conn.reset()
                    return conn
                self._close(conn)
        return None

    async def _connection(self, key: _Key) -> _Conn:
        """A new connection to ``key``."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Conn(self, key), *key)
        except TimeoutError:
            raise UpstreamError(
                "connect", f"cannot connect: no answer in {self.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamError("connect", f"cannot connect: {exc}") from exc
        self._open.add(conn)
        return conn

    def give_back(self, conn: _Conn) -> None:
        keep = (
            conn.complete
            and conn.lost is None
            and not conn.closed
            and conn.keep_alive
            and not conn.body
        )
        if not keep:
            self.discard(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def discard(self, conn: _Conn) -> None:
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._open.discard(conn)
        conn.closed = True
        conn.stop_timer()
        if conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        for conn in list(self._open):
            self._close(conn)
        self._idle.clear()
