"""The lowest floor a Python gateway could stand on here: a proxy made of callbacks only.

``gateway_floor.py`` is the gateway's own server stack (uvicorn, ASGI, a task per request, the
pooled HTTP/1.1 client) with a trivial app. This one drops the stack too: an asyncio protocol on
httptools and uvloop that, in the callback where a request's last byte is parsed, writes it to
a kept-alive connection to one of the fakes (round robin), and in the callback where the fake's
bytes arrive, writes them as they are to the client. No task, no future, no ASGI message, no
parsing of the answer beyond finding its end; nothing a gateway needs (limits, routing, errors,
timeouts, a replica that fails) is there. It is not a server to run, only the measure of what
the event loop, the parser and the system calls cost in Python, so that a gateway's added time
to first token can be read against it as well as against a Rust router's.

``benchmarks/gateway_ttft_ab.py --a raw-floor --b vllm-router=PATH`` runs it paired;
``raw-floor-tasks`` is the same proxy with a task per request (it writes the request upstream
and relays the answer's first bytes, woken by a future), to tell the cost of that hop apart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gateway_floor  # starts a floor proxy

APP = r"""
import asyncio, itertools, os, sys
import httptools, uvloop

FAKES = [u.removeprefix("http://").split(":") for u in os.environ["FLOOR_FAKES"].split(",")]
TASKS = os.environ.get("FLOOR_TASKS") == "1"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Upstream(asyncio.Protocol):
    # One kept-alive connection to a fake; relays what it reads to the client it serves.
    def __init__(self, pool):
        self.pool, self.client, self.transport, self.waiter = pool, None, None, None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        waiter = self.waiter
        if waiter is not None:  # --tasks: the request's task writes the first bytes
            self.waiter = None
            waiter.set_result(data)
        elif self.client is not None:
            self.client.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self):
        self.client = None
        self.pool.append(self)


class Client(asyncio.Protocol):
    def __init__(self, pools, turn):
        self.pools, self.turn = pools, turn
        self.parser = httptools.HttpRequestParser(self)
        self.transport, self.url, self.headers, self.body = None, b"", [], []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        if name.lower() not in (b"host", b"content-length", b"connection"):
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        if self.parser.get_method() != b"POST":
            self.transport.write(OK)
            return
        pool = self.pools[next(self.turn)]
        up = pool.pop()
        up.client = self.transport
        body = b"".join(self.body)
        head = b"POST %s HTTP/1.1\r\nhost: fake\r\n%scontent-length: %d\r\n\r\n" % (
            self.url, b"".join(self.headers), len(body))
        if TASKS:
            asyncio.get_running_loop().create_task(self.relay(up, head + body))
        else:
            up.transport.write(head + body)

    async def relay(self, up, request):
        # What a gateway with a task per request pays on top: a hop to start the task, a
        # future the upstream's callback wakes it with, and the hop back.
        up.waiter = asyncio.get_running_loop().create_future()
        up.transport.write(request)
        client = up.client
        first = await up.waiter  # the answer may be whole in it (``up`` is pooled again)
        client.write(first)


async def main():
    loop = asyncio.get_running_loop()
    pools = []
    for host, port in FAKES:
        pool = []
        for _ in range(256):
            _, up = await loop.create_connection(lambda: Upstream(pool), host, int(port))
            pool.append(up)
        pools.append(pool)
    turn = itertools.cycle(range(len(pools)))
    server = await loop.create_server(lambda: Client(pools, turn), "127.0.0.1", int(sys.argv[1]),
                                      backlog=2048)
    await server.serve_forever()

uvloop.run(main())
"""


def start_raw_floor(urls: list[str], tasks: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """The callback-only proxy in front of ``urls``, pinned to CPU 0, once it answers; with
    ``tasks``, each request's upstream write and first relay done by a task of its own."""
    return gateway_floor.start_floor(urls, APP, {"FLOOR_TASKS": "1" if tasks else "0"})
