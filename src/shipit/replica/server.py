"""Runs a replica app under uvicorn with graceful drain on SIGTERM/SIGINT.

Owns the process-level behaviour: TCP_NODELAY on every accepted connection (small SSE chunks
must not wait for Nagle's algorithm), and the signal contract: the first SIGTERM or SIGINT
starts a drain (new requests get 503 with ``Retry-After`` while the listener stays open,
in-flight streams finish up to ``drain_timeout_s``), then the server stops and ``serve``
returns normally (exit 0); a second signal forces the exit. A replica whose model fails to
load stops at once and ``serve`` returns 1. It must not parse flags (the CLI does).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shipit.replica.app import Replica, create_app
from shipit.replica.settings import ReplicaSettings
from shipit.replica.startup import StartupTimes

log = logging.getLogger("shipit.replica")


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle's algorithm on a TCP transport (no-op for other sockets)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)


class DrainingServer(uvicorn.Server):
    """uvicorn, but a signal drains the replica before the server stops."""

    def __init__(self, config: uvicorn.Config, replica: Replica) -> None:
        super().__init__(config)
        self.replica = replica
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self.drain_task: asyncio.Future[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Deliberately not recorded in _captured_signals: uvicorn would re-raise it after
        # shutdown and the process would die by the signal instead of exiting 0.
        if self._draining or self._loop is None:
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        cancelled = await self.replica.drain()
        log.info("drained (%d request(s) cancelled at the timeout); stopping", cancelled)
        self.should_exit = True

    def fatal(self) -> None:
        self.exit_code = 1
        self.should_exit = True


def build_server(
    settings: ReplicaSettings, *, startup: StartupTimes | None = None, **uvicorn_options: Any
) -> DrainingServer:
    holder: list[DrainingServer] = []
    app = create_app(settings, on_fatal=lambda: holder[0].fatal(), startup=startup)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=NoDelayHttpToolsProtocol,
        lifespan="on",
        timeout_keep_alive=30,
        **uvicorn_options,
    )
    server = DrainingServer(config, app.state.replica)
    holder.append(server)
    return server


def serve(
    settings: ReplicaSettings, *, startup: StartupTimes | None = None, **uvicorn_options: Any
) -> int:
    """Serve until drained; returns the process exit code."""
    server = build_server(settings, startup=startup, **uvicorn_options)
    server.run()
    return server.exit_code
