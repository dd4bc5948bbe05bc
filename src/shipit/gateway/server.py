"""Serving a gateway app: uvicorn (uvloop + httptools) on a socket we bind ourselves.

Owns the listening socket (bound before the server starts, so port 0 works and the real port
is known; TCP_NODELAY set on it, which accepted connections inherit on Linux, so small SSE
chunks are never held back by Nagle's algorithm) and ``serve``, which runs until SIGINT or
SIGTERM and then shuts down gracefully (the app's lifespan drains and stops replicas). It must
not build the app or know what it serves. Slow or oversized request headers are cut off by
``gateway.protocol``; HTTPS is uvicorn's, with the certificate ``gateway.tls`` names.

Signals are idempotent: the first SIGINT or SIGTERM starts the drain; a second one (Ctrl-C
pressed again, ``timeout -s INT``, a supervisor that repeats itself) only says that the drain
is in progress; a third forces the stop, cutting what is still open, and says so. ``serve``
returns how it ended (``Stopped``), so the caller's exit status can tell.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import resource
import signal
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any, Protocol

import uvicorn

from shipit.config.gateway import ShipitConfig
from shipit.gateway.protocol import protocol_class


class ServedApp(Protocol):
    """What ``serve`` runs: an ASGI app whose ``config.gateway`` holds its edge limits (the
    gateway, or the global front door of a live fleet)."""

    config: ShipitConfig

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None: ...


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket; with ``reuse_port``, other gateway processes can bind the same
    port and the kernel spreads new connections between them (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


logger = logging.getLogger("shipit.gateway")

# Each client connection holds one descriptor and each proxied request one more upstream; many
# distributions start processes with a soft limit of 1024, which a gateway outgrows long before
# its CPU does. ``serve`` raises it toward OPEN_FILES_WANTED and says so at start when the hard
# limit keeps it below OPEN_FILES_LOW.
OPEN_FILES_WANTED = 65536
OPEN_FILES_LOW = 8192


def raise_open_files(want: int = OPEN_FILES_WANTED) -> tuple[int, int]:
    """Raise this process's soft open-files limit toward ``want``, up to the hard limit (which
    only root may raise). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want if hard == resource.RLIM_INFINITY else min(want, hard))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, target


FORCE_AFTER = 3  # signals: the first drains, the second is acknowledged, the third forces


class Stopped(enum.Enum):
    """How ``serve`` ended."""

    DRAINED = "drained"  # every open request finished, then the app shut down
    CUT = "cut"  # graceful_shutdown_s ran out: uvicorn cancelled what was still open
    FORCED = "forced"  # a third signal forced the stop


class _Server(uvicorn.Server):
    """uvicorn's server with idempotent signal handling (uvicorn forces on a second SIGINT and
    re-raises the signals it caught once it returns, which turns a clean drain into a
    ``KeyboardInterrupt``)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.signals: list[int] = []
        self.drained = False
        self.forced = False
        self.on_force: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        name = signal.Signals(sig).name
        n = len(self.signals)
        if n == 1:
            self.should_exit = True
            logger.warning(
                "%s: stopping; open requests finish first (send it %d more times to force)",
                name,
                FORCE_AFTER - 1,
            )
        elif n < FORCE_AFTER:
            logger.warning(
                "%s again: still draining open requests; one more signal forces the stop "
                "and cuts them",
                name,
            )
        elif not self.forced:
            self.forced = self.force_exit = True
            logger.warning("%s a third time: forcing the stop; open requests are cut", name)
            if self.on_force is not None:
                self.on_force()

    async def _wait_tasks_to_complete(self) -> None:
        # uvicorn bounds this by graceful_shutdown_s and cancels it when that runs out:
        # reaching the end means every connection finished.
        await super()._wait_tasks_to_complete()
        self.drained = not self.force_exit


def make_server(app: ServedApp, *, graceful_shutdown_s: float, log_level: str) -> _Server:
    """uvicorn with the gateway's edge limits (``gateway.limits``: header timeout and size,
    keep-alive) and, when ``gateway.tls`` names a certificate, HTTPS."""
    edge = app.config.gateway
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=protocol_class(
            header_timeout_s=edge.limits.header_timeout_s,
            max_header_bytes=edge.limits.max_header_bytes,
        ),
        ws="websockets-sansio",
        lifespan="on",
        interface="asgi3",
        # No proxy-headers middleware: a client's address is its socket's peer; an
        # ``X-Forwarded-For`` claim is recorded beside it where it matters (the audit log).
        proxy_headers=False,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_shutdown_s) or None,
        timeout_keep_alive=int(edge.limits.keep_alive_s) or 1,
        backlog=2048,
        ssl_certfile=edge.tls.cert,
        ssl_keyfile=edge.tls.key,
    )
    return _Server(config)


async def serve(
    app: ServedApp,
    sock: socket.socket,
    *,
    graceful_shutdown_s: float = 30.0,
    log_level: str = "warning",
    on_listening: Callable[[], None] | None = None,
) -> Stopped:
    """Serve until a signal asks us to stop; ``on_listening`` runs once the app has started.
    Returns how the stop went."""
    before, after = raise_open_files()
    if after < OPEN_FILES_LOW:
        logger.warning(
            "open-files limit is %d (hard limit; soft was %d): the gateway holds one descriptor "
            "per client connection and one per upstream request, so it refuses connections past "
            "about %d; raise it with `ulimit -Hn` or LimitNOFILE= in the service unit",
            after,
            before,
            after // 2,
        )
    server = make_server(app, graceful_shutdown_s=graceful_shutdown_s, log_level=log_level)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()

    def force() -> None:
        loop.call_soon_threadsafe(task.cancel)

    server.on_force = force
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        # What the start built (config, request schemas, metrics, modules) lives as long as
        # the process: frozen, the cyclic collector stops walking it on every full collection
        # (requests' own garbage is young and is collected as before).
        gc.collect()
        gc.freeze()
    if server.started and on_listening is not None:
        on_listening()
    try:
        await task
    except asyncio.CancelledError:
        if not server.forced:
            raise
    if server.forced:
        return Stopped.FORCED
    return Stopped.DRAINED if server.drained else Stopped.CUT
