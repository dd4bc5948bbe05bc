"""Process-level behaviour: TCP_NODELAY on accepted sockets, and the signal contract
(first signal drains, a second forces the exit, neither is re-raised)."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

from shipit.replica.server import build_server, set_nodelay
from shipit.replica.settings import ReplicaSettings


class FakeTransport(asyncio.BaseTransport):
    def __init__(self, sock: socket.socket | None) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def test_set_nodelay_on_a_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        set_nodelay(FakeTransport(sock))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    set_nodelay(FakeTransport(None))  # not a socket transport: nothing to do


def test_first_signal_drains_second_forces() -> None:
    server = build_server(ReplicaSettings(model="m", simulate="H100:llama-3.1-8b"))

    async def main() -> None:
        server._loop = asyncio.get_running_loop()
        server.replica.lifecycle.ready()
        server.handle_exit(signal.SIGTERM, None)
        for _ in range(10):  # the drain is scheduled on the loop, thread-safely
            if server.drain_task is not None:
                break
            await asyncio.sleep(0)
        assert server.drain_task is not None
        await server.drain_task
        assert server.should_exit  # nothing in flight: drained at once
        assert not server.force_exit
        server.handle_exit(signal.SIGINT, None)
        assert server.force_exit
        assert server._captured_signals == []  # not re-raised after shutdown: exit 0

    asyncio.run(main())
    assert server.exit_code == 0
