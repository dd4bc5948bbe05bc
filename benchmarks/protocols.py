"""What each client protocol costs at the gateway: added latency P50/P99 and req/s on one core.

The same two instant fake replicas (``shipit.bench.instant_server``: 16 content chunks at once)
serve every protocol in one run; the gateway (``shipit up --grpc-port``) is pinned to CPU 0,
the fakes and this Python load generator share CPU 1 (helpers from ``gateway_overhead.py``).

- HTTP unary: a request with ``stream: false``, timed to the last byte of the answer; added
  latency against the same request sent straight to a fake.
- SSE, WebSocket (``/v1/ws``, 8 sockets, requests multiplexed by id) and gRPC
  (``StreamChatCompletion``): streamed, timed to the first chunk (TTFT); added latency against
  a direct SSE stream's TTFT at the same rate.

Open loop at ``--rate`` req/s for ``--requests`` requests per protocol gives P50/P99; a closed
loop of ``--concurrency`` requests for ``--seconds`` gives req/s through one gateway core (a
floor where the load generator, not the gateway, saturates its core). Protocols are measured
in turn, in an order that rotates with ``--repeats``. Prints a table and writes
``benchmarks/results/protocols.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from gateway_overhead import _free_port, _pct, start_fake, start_gateway, stop
from shipit.proto import shipit_pb2, shipit_pb2_grpc

RESULTS = Path(__file__).parent / "results" / "protocols.json"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
STREAM_BODY = json.dumps({**CHAT, "stream": True}).encode()
STREAM_JSON = STREAM_BODY.decode()
UNARY_BODY = json.dumps({**CHAT, "stream": False}).encode()
HEADERS = {"content-type": "application/json"}
PROTOCOLS = ("http", "sse", "ws", "grpc")
WS_SOCKETS = 8

Once = Callable[[], Awaitable[float | None]]  # one request: its latency (s), None if failed


class Clients:
    """Connections for every protocol, opened once: an aiohttp pool, ``WS_SOCKETS`` sockets
    with a reader each, one gRPC channel."""

    def __init__(self, http_url: str, grpc_target: str, fake_urls: list[str]) -> None:
        self.http_url, self.grpc_target, self.fake_urls = http_url, grpc_target, fake_urls
        self._ids = itertools.count()
        # Per WebSocket request: its first chunk's arrival time, and its end (ok or not).
        self._waiting: dict[str, tuple[asyncio.Future[float], asyncio.Future[bool]]] = {}
        self._rr = itertools.count()

    async def __aenter__(self) -> Clients:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.sockets = [
            await self.session.ws_connect(self.http_url.replace("http", "ws", 1) + "/v1/ws")
            for _ in range(WS_SOCKETS)
        ]
        self.readers = [asyncio.create_task(self._read(ws)) for ws in self.sockets]
        self.channel = grpc.aio.insecure_channel(self.grpc_target)
        self.stub = shipit_pb2_grpc.InferenceStub(self.channel)  # type: ignore[no-untyped-call]
        self.grpc_request = shipit_pb2.ChatCompletionRequest(
            model="m", messages=[shipit_pb2.ChatMessage(role="user", content="hi")], max_tokens=16
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in self.sockets:
            await ws.close()
        for task in self.readers:
            task.cancel()
        await self.channel.close(None)
        await self.session.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            futs = self._waiting.get(data["id"])
            if futs is None:
                continue
            first, end = futs
            if data["type"] == "chunk" and not first.done():
                first.set_result(time.perf_counter())
            elif data["type"] == "done":
                del self._waiting[data["id"]]
                end.set_result(data["status"] == 200 and first.done())

    # ----- one request per protocol ---------------------------------------------------------
    async def http_unary(self, url: str) -> float | None:
        t0 = time.perf_counter()
        try:
            async with self.session.post(
                url + "/v1/chat/completions", data=UNARY_BODY, headers=HEADERS
            ) as resp:
                await resp.read()
                return time.perf_counter() - t0 if resp.status == 200 else None
        except aiohttp.ClientError:  # e.g. a keep-alive connection closed as it was reused
            return None

    async def sse(self, url: str) -> float | None:
        t0 = time.perf_counter()
        ttft = None
        try:
            async with self.session.post(
                url + "/v1/chat/completions", data=STREAM_BODY, headers=HEADERS
            ) as resp:
                if resp.status != 200:
                    return None
                async for _chunk in resp.content.iter_any():
                    if ttft is None:
                        ttft = time.perf_counter() - t0
        except aiohttp.ClientError:
            return None
        return ttft

    async def ws(self) -> float | None:
        rid = str(next(self._ids))
        loop = asyncio.get_running_loop()
        first: asyncio.Future[float] = loop.create_future()
        end: asyncio.Future[bool] = loop.create_future()
        self._waiting[rid] = (first, end)
        ws = self.sockets[next(self._rr) % len(self.sockets)]
        t0 = time.perf_counter()
        await ws.send_str('{"type":"request","id":"' + rid + '","body":' + STREAM_JSON + "}")
        # The whole answer, so that a closed loop holds one request per worker.
        if not await end:
            return None
        return first.result() - t0

    async def grpc(self) -> float | None:
        t0 = time.perf_counter()
        ttft = None
        try:
            async for _msg in self.stub.StreamChatCompletion(self.grpc_request):
                if ttft is None:
                    ttft = time.perf_counter() - t0
        except grpc.aio.AioRpcError:
            return None
        return ttft

    def via_gateway(self, protocol: str) -> Once:
        return {
            "http": lambda: self.http_unary(self.http_url),
            "sse": lambda: self.sse(self.http_url),
            "ws": self.ws,
            "grpc": self.grpc,
        }[protocol]

    def direct(self, unary: bool) -> Once:
        fakes = itertools.cycle(self.fake_urls)
        if unary:
            return lambda: self.http_unary(next(fakes))
        return lambda: self.sse(next(fakes))


async def open_loop(once: Once, rate: float, n: int) -> list[float]:
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(once()))
    return [t for t in await asyncio.gather(*tasks) if t is not None]


async def closed_loop(once: Once, concurrency: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            if await once() is not None:
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - t0)


async def measure(
    args: argparse.Namespace, http_url: str, grpc_target: str, fakes: list[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with Clients(http_url, grpc_target, fakes) as c:
        for protocol in PROTOCOLS:  # warm every path
            await open_loop(c.via_gateway(protocol), args.rate, 100)
        for repeat in range(args.repeats):
            order = PROTOCOLS[repeat % 4 :] + PROTOCOLS[: repeat % 4]
            direct = {
                unary: await open_loop(c.direct(unary), args.rate, args.requests)
                for unary in (True, False)
            }
            for protocol in order:
                via = await open_loop(c.via_gateway(protocol), args.rate, args.requests)
                base = direct[protocol == "http"]
                rps = await closed_loop(c.via_gateway(protocol), args.concurrency, args.seconds)
                rows.append(
                    {
                        "protocol": protocol,
                        "repeat": repeat,
                        "timed_to": "last byte" if protocol == "http" else "first chunk",
                        "direct_p50_ms": _pct(base, 50) * 1000,
                        "direct_p99_ms": _pct(base, 99) * 1000,
                        "p50_ms": _pct(via, 50) * 1000,
                        "p99_ms": _pct(via, 99) * 1000,
                        "added_p50_ms": (_pct(via, 50) - _pct(base, 50)) * 1000,
                        "added_p99_ms": (_pct(via, 99) - _pct(base, 99)) * 1000,
                        "completed": len(via),
                        "req_s_one_core": rps,
                    }
                )
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for protocol in PROTOCOLS:
        mine = [r for r in rows if r["protocol"] == protocol]
        summary = {"protocol": protocol, "timed_to": mine[0]["timed_to"]}
        for key in ("added_p50_ms", "added_p99_ms", "p50_ms", "p99_ms", "req_s_one_core"):
            summary[key] = statistics.median(r[key] for r in mine)
        summary["completed"] = min(r["completed"] for r in mine)
        out.append(summary)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop req/s")
    parser.add_argument("--requests", type=int, default=2000, help="per protocol, open loop")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop requests")
    parser.add_argument("--seconds", type=float, default=5.0, help="closed loop, per protocol")
    parser.add_argument("--repeats", type=int, default=1, help="report medians of N runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [start_fake(1) for _ in range(2)]
    fake_urls = [u for _, u in fakes]
    grpc_port = _free_port()
    gw, http_url, _log = start_gateway(fake_urls, 0, extra_args=("--grpc-port", str(grpc_port)))
    load = os.getloadavg()[0]
    try:
        rows = uvloop.run(measure(args, http_url, f"127.0.0.1:{grpc_port}", fake_urls))
    finally:
        stop(gw)
        for p, _ in fakes:
            stop(p)
    table = summarize(rows)
    result = {
        "rate_req_s": args.rate,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": load,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "note": "gateway pinned to CPU 0; fakes and the Python load generator share CPU 1",
        "table": table,
        "runs": rows,
    }
    print(
        f"{'protocol':9s} {'timed to':12s} {'added P50':>10s} {'added P99':>10s} "
        f"{'P50':>8s} {'P99':>8s} {'req/s':>8s}"
    )
    for r in table:
        print(
            f"{r['protocol']:9s} {r['timed_to']:12s} {r['added_p50_ms']:8.2f}ms "
            f"{r['added_p99_ms']:8.2f}ms {r['p50_ms']:6.2f}ms {r['p99_ms']:6.2f}ms "
            f"{r['req_s_one_core']:8.0f}"
        )
    print(f"load average (1 min): {load:.2f} at start, {result['loadavg_1m_at_end']:.2f} at end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
