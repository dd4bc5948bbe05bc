"""A minimal HTTP/1.1 server of our own on httptools, for ``serving_stacks.py`` only.

The question it answers: how much of the gateway's CPU per request is uvicorn's protocol, i.e.
what would an asyncio protocol of our own (parse with httptools, call the ASGI app, frame the
answer) save? It serves exactly what the benchmark sends: requests with a ``Content-Length``
body (or none), answers with ``Content-Length`` or chunked, keep-alive, writes coalesced per
loop iteration like the gateway's protocol. It is NOT a production server: no pipelining, no
``Expect: 100-continue``, no header-size or header-time limits, no WebSocket upgrade, no
graceful drain, no TLS. Run as ``python own_h1.py MODULE:APP PORT``.
"""

from __future__ import annotations

import asyncio
import http
import importlib
import signal
import socket
import sys
from typing import Any

import httptools
import uvloop

from shipit.gateway.coalesce import CoalescingTransport

_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_DISCONNECT = {"type": "http.disconnect"}
_500 = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
_TASKS: set[asyncio.Task[None]] = set()


class _Cycle:
    __slots__ = (
        "body",
        "body_sent",
        "chunked",
        "complete",
        "disconnected",
        "done",
        "keep_alive",
        "proto",
        "started",
        "waiter",
    )

    def __init__(self, proto: H1, keep_alive: bool) -> None:
        self.proto = proto
        self.body: list[bytes] = []
        self.complete = False  # the request body is all here
        self.body_sent = False  # ... and handed to the app
        self.disconnected = False
        self.started = False
        self.done = False  # the response is all written
        self.chunked = False
        self.keep_alive = keep_alive
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.disconnected or self.done:
                return _DISCONNECT  # as uvicorn: once the answer is written, a disconnect
            if not self.body_sent and (self.body or self.complete):
                body = b"".join(self.body)
                self.body.clear()
                self.body_sent = self.complete
                return {"type": "http.request", "body": body, "more_body": not self.complete}
            self.waiter = self.proto.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        t = self.proto.transport
        if kind == "http.response.start":
            status = message["status"]
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b""))]
            length = False
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-length":
                    length = True
                head.append(b"%s: %s\r\n" % (name, value))
            if not length:
                self.chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            self.started = True
            t.write(b"".join(head))
        elif kind == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.chunked:
                if body:
                    t.write(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    t.write(b"0\r\n\r\n")
            elif body:
                t.write(body)
            if not more:
                self.done = True
                self.proto.response_done(self)


class H1(asyncio.Protocol):
    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.cycle: _Cycle | None = None
        self.client: Any = None
        self.server: Any = None

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = transport.get_extra_info("peername")
        self.server = transport.get_extra_info("sockname")
        self.transport = CoalescingTransport(transport, self.loop)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.wake()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        url = httptools.parse_url(self.url)
        path = url.path.decode("latin-1")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": self.parser.get_method().decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": url.path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": {},
        }
        cycle = self.cycle = _Cycle(self, self.parser.should_keep_alive())
        task = self.loop.create_task(self._run(scope, cycle))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None:
            self.cycle.body.append(body)
            self.cycle.wake()

    def on_message_complete(self) -> None:
        if self.cycle is not None:
            self.cycle.complete = True
            self.cycle.wake()

    async def _run(self, scope: dict[str, Any], cycle: _Cycle) -> None:
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception:
            if not cycle.started:
                self.transport.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                )
            self.transport.close()
            return
        if not cycle.done:
            self.transport.close()

    def response_done(self, cycle: _Cycle) -> None:
        if not cycle.keep_alive:
            self.transport.close()
        cycle.wake()  # a receive waiting for a disconnect answers one now


async def serve(app: Any, port: int) -> None:
    loop = asyncio.get_running_loop()
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = loop.create_future()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set_result(None)

    await startup.put({"type": "lifespan.startup"})
    lifespan = loop.create_task(app({"type": "lifespan"}, startup.get, lifespan_send))
    await started
    server = await loop.create_server(
        lambda: H1(app, loop), "127.0.0.1", port, backlog=2048, reuse_address=True
    )
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    await stop
    server.close()
    lifespan.cancel()


def main() -> None:
    target, port = sys.argv[1], int(sys.argv[2])
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr)
    uvloop.run(serve(app, port))


if __name__ == "__main__":
    main()
