"""A gateway (HTTP/SSE, WebSocket and gRPC) in front of scripted replicas, served on 127.0.0.1
from a background thread with its own event loop, so that sync and async clients can call it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway
from shipit.gateway.rpc import GrpcDoor
from shipit.gateway.server import bind_socket, make_server
from shipit.services.upstream_fake import FakeReplica, FakeUpstream


@dataclass
class Served:
    gateway: Gateway
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    loop: asyncio.AbstractEventLoop

    def in_flight(self, rid: str) -> int:
        return self.gateway.routers["default"].registry.get(rid).in_flight

    def endpoint(self, protocol: str) -> str:
        return self.grpc if protocol == "grpc" else self.http

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the gateway's loop (e.g. ``event.set``)."""
        self.loop.call_soon_threadsafe(fn, *args)


@contextmanager
def serve_gateway(
    replicas: dict[str, FakeReplica],
    gateway: dict[str, Any] | None = None,
    jobs: dict[str, Any] | None = None,
    **deployment: Any,
) -> Iterator[Served]:
    """``gateway``: the config's ``gateway`` section (``tls``, ...); ``jobs``: its ``jobs``
    section; ``deployment``: fields of its one deployment."""
    raw: dict[str, Any] = {
        "gateway": gateway or {},
        "deployments": [{"model": "m", "replicas": 0, **deployment}],
    }
    if jobs is not None:
        raw["jobs"] = jobs
    cfg = parse_config(raw)
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    gw = create_gateway(cfg, clock=RealClock(), upstream_factory=lambda: upstream, monitor=False)
    for rid in replicas:
        gw.routers["default"].add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
    loop = asyncio.new_event_loop()
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(gw, graceful_shutdown_s=1, log_level="warning")
    door = GrpcDoor("127.0.0.1", 0)
    ready = threading.Event()
    ports: list[int] = []

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                ready.set()
                return
            await asyncio.sleep(0.01)
        ports.append(await door.start(gw))
        ready.set()
        await task
        await door.stop(0)
        await asyncio.sleep(0.2)  # connections aborted at shutdown finish closing

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    if not ports:
        raise RuntimeError("the gateway did not start")
    try:
        scheme = "https" if cfg.gateway.tls.cert else "http"
        http = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        yield Served(gw, http, f"127.0.0.1:{ports[0]}", loop)
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()
