"""Serving a gateway app: uvicorn (uvloop + httptools) on a socket we bind ourselves.

Owns the listening socket (bound before the server starts, so port 0 works and the real port
is known; TCP_NODELAY set on it, which accepted connections inherit on Linux, so small SSE
chunks are never held back by Nagle's algorithm) and ``serve``, which runs until SIGINT or
SIGTERM and then shuts down gracefully (the app's lifespan drains and stops replicas). It must
not build the app or know what it serves. Slow or oversized request headers are cut off by
``gateway.protocol``; HTTPS is uvicorn's, with the certificate ``gateway.tls`` names.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import uvicorn

from shipit.gateway.app import Gateway
from shipit.gateway.protocol import protocol_class


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_server(app: Gateway, *, graceful_shutdown_s: float, log_level: str) -> uvicorn.Server:
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
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_shutdown_s) or None,
        timeout_keep_alive=int(edge.limits.keep_alive_s) or 1,
        backlog=2048,
        ssl_certfile=edge.tls.cert,
        ssl_keyfile=edge.tls.key,
    )
    return uvicorn.Server(config)


async def serve(
    app: Gateway,
    sock: socket.socket,
    *,
    graceful_shutdown_s: float = 30.0,
    log_level: str = "warning",
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until a signal asks us to stop; ``on_listening`` runs once the app has started."""
    server = make_server(app, graceful_shutdown_s=graceful_shutdown_s, log_level=log_level)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started and on_listening is not None:
        on_listening()
    await task
