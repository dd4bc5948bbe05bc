"""The gateway's HTTP/1.1 connection protocol: uvicorn's httptools one, with slowloris guards.

uvicorn closes a connection idle between requests (``timeout_keep_alive``), but any byte that
arrives cancels that timer and nothing bounds how long a request's headers may take or how
large they may grow. This subclass arms a header timer when a connection opens, and when a
new request's first read ends with its headers incomplete (a request whose headers come in one
read sets none), and cancels it once the headers are complete: a client that trickles headers
is closed after ``header_timeout_s`` however often it sends a byte. Request line and
headers beyond ``max_header_bytes`` get a 431 and the connection is closed. ``protocol_class``
binds the limits into a class for ``uvicorn.Config(http=...)``. The keep-alive timeout is
uvicorn's, kept lazily: where uvicorn sets a timer at each response's end and cancels it at the
next read (a ``call_later`` and a ``cancel`` a request), one timer per connection stays set and,
when it fires, closes the connection only if it has been idle since a response ended for the
whole timeout; else it is set again for what is left. Its transport coalesces writes
per event-loop iteration (``gateway.coalesce``): a response's head and the chunks ready with it
leave in one write. Each request's scope carries a ``gateway.direct.DirectBody`` for writing
its body chunks without a trip through ``send``.

**Early start.** When the app has an ``early_start`` (the gateway) and a POST to one of its
``early_paths`` arrives whole in one read (headers and body; not pipelined behind an answer
under way, no ``Expect: 100-continue``, no upgrade), uvicorn's start of the request (its scope,
request cycle and task) is held back until the last byte is parsed, and ``early_start(path,
headers, body)`` is called from this callback: the app may begin the request there (the
gateway routes it and writes it to a replica) and return the ASGI app to run the request on
instead of its own. Then, or when it returns None, uvicorn starts the request as it would have
(with the same body, handed over as it always is): nothing else about the request changes. A
request whose body takes more than one read is started at the end of the first, as usual.
The protocol itself reads no body and knows nothing of what the app does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shipit.gateway.coalesce import CoalescingTransport
from shipit.gateway.direct import DIRECT_BODY, DirectBody

logger = logging.getLogger(__name__)

EarlyStart = Callable[[str, list[tuple[bytes, bytes]], bytes], Any]

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    coalesce_writes: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False
        self._direct: DirectBody | None = None  # the latest request's
        # The connection's own transport (under the coalescing one): asked on every parser
        # callback whether it is closing, a C call rather than two Python ones.
        self._raw: asyncio.Transport | None = None
        # The app's early start (see the module's text) and the request it holds back, if any.
        self._early: EarlyStart | None = getattr(self.app, "early_start", None)
        self._early_paths: frozenset[bytes] = getattr(self.app, "early_paths", frozenset())
        self._held: bytearray | None = None
        # Since when the connection has been idle after a response (loop time); None while a
        # request is under way or being read. The keep-alive timer reads it when it fires.
        self._idle_since: float | None = None

    def _arm(self) -> None:
        self._disarm()
        self._in_headers = True
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        if self.coalesce_writes:
            transport = CoalescingTransport(transport, self.loop)
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        timer, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.client_gone()  # only if uvicorn marked its request disconnected

    def on_message_begin(self) -> None:
        # The first byte of a request on a kept-alive connection starts its clock (on a fresh
        # one, the connection's opening did); the timer itself is set at the end of the read
        # only if the headers are not complete by then (``data_received``), so a request that
        # comes in one read costs no timer. An idle kept-alive connection is uvicorn's
        # ``timeout_keep_alive``'s to close.
        if not self._in_headers:
            self._in_headers = True
            self._header_bytes = 0
        super().on_message_begin()

    def _closing(self) -> bool:
        raw = self._raw
        return raw.is_closing() if raw is not None else bool(self.transport.is_closing())

    # ----- keep-alive: one timer a connection, not one a request (see the module's text) -----
    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls it on every read: the connection is busy, the timer stays set.
        self._idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, but for the timer: it stays set if it is, and is set only if it is not.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return  # a request is under way: set again when its response ends
        left_s = since + self.timeout_keep_alive - self.loop.time()
        if left_s > 0:  # a later request ended its idle time and began a new one
            self.timeout_keep_alive_task = self.loop.call_later(left_s, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def data_received(self, data: bytes) -> None:
        if not self._closing():
            # uvicorn's ``data_received``, inline (the keep-alive timer is lazy: a read only
            # marks the connection busy).
            self._idle_since = None
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            if self._in_headers and self._header_timer is None and not self._closing():
                # Headers still incomplete after this read: from now on they are timed.
                self._header_timer = self.loop.call_later(
                    self.header_timeout_s, self._headers_too_slow
                )
            if self._held is not None:  # the body goes on in a later read: started as usual
                held, self._held = self._held, None
                if not self._closing():
                    self._start()
                    if held:
                        super().on_body(bytes(held))

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._too_large()

    def _too_large(self) -> None:
        self._disarm()
        msg = f"request headers over {self.max_header_bytes} bytes".encode()
        if not self._closing():
            self.transport.write(_431 % (len(msg), msg))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Once per header line: ``_count`` written out, and the closing check in C.
        self._header_bytes += len(name) + len(value) + 4
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._too_large()
        raw = self._raw
        if not (raw.is_closing() if raw is not None else self.transport.is_closing()):
            # uvicorn's ``on_header``, inline: one Python call a header line, not two.
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._closing():
            return
        if self._early is not None and self._may_start_early():
            self._held = bytearray()  # uvicorn's start waits for the last byte
            return
        self._start()

    def _may_start_early(self) -> bool:
        cycle = self.cycle
        return (
            self.url in self._early_paths
            and self.parser.get_method() == b"POST"
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
            and (cycle is None or cycle.response_complete)
            and self.limit_concurrency is None
            and not self.root_path
        )

    def _start(self, app: Any = None) -> None:
        """uvicorn's start of the request (scope, cycle, task), on ``app`` when one is given
        instead of the server's app; and the request's ``DirectBody``."""
        if app is None:
            super().on_headers_complete()
        else:
            server_app, self.app = self.app, app
            try:
                super().on_headers_complete()
            finally:
                self.app = server_app
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not for an upgrade
            ext = self.scope.setdefault("extensions", {})
            ext[DIRECT_BODY] = self._direct = DirectBody(cycle, self.loop)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        held = self._held
        if held is not None:
            held += body
        elif not self._closing() and self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._closing():
                self._start_early(bytes(held))
        elif not self._closing() and self.cycle is not None:
            super().on_message_complete()

    def _start_early(self, body: bytes) -> None:
        assert self._early is not None
        app = None
        try:
            app = self._early(self.url.decode("ascii"), self.headers, body)
        except Exception:  # a fault of the app's: the request takes the whole way
            logger.exception("the early start of %s failed", self.url.decode("ascii"))
        self._start(app)
        if body:
            super().on_body(body)
        super().on_message_complete()


def protocol_class(
    *, header_timeout_s: float, max_header_bytes: int, coalesce_writes: bool = True
) -> type[HttpToolsProtocol]:
    """The protocol with these limits, as a class uvicorn can instantiate per connection;
    ``coalesce_writes`` sends what an event-loop iteration wrote in one system call
    (``gateway.coalesce``)."""
    return type(
        "GatewayHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": max_header_bytes,
            "coalesce_writes": coalesce_writes,
        },
    )
