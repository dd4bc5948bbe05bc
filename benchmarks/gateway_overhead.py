"""Gateway overhead: added TTFT (through the gateway minus direct) and streamed req/s on one core.

Two instant fake replicas (``shipit.bench.instant_server``: 16 content chunks at once) and the
load generator share CPU 1; the gateway (``shipit up --replica-url ...``) is pinned to CPU 0.
Open loop at ``--rate`` req/s gives TTFT P50/P99 direct and through the gateway; a closed loop
of ``--concurrency`` streams gives the highest streamed req/s. Prints a table and writes
``benchmarks/results/gateway_overhead.json``. Goals (issue 4): added TTFT P50 <= 1 ms and
P99 <= 5 ms at 500 req/s; >= 2,000 streamed req/s on one gateway core. On a 2-core machine the
Python load generator shares a core with the fakes, so the req/s figure is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

BODY = json.dumps(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 16,
    }
).encode()
RESULTS = Path(__file__).parent / "results" / "gateway_overhead.json"


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def start_fake(cpu: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipit.bench.instant_server", "--tokens", "16", "--cpu", str(cpu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def start_gateway(urls: list[str], cpu: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    cfg = {
        "deployments": [
            {
                "model": "m",
                "replicas": 0,
                "replica_urls": urls,
                "queueing": {"concurrency_target": 512, "max_queue": 4096},
            }
        ]
    }
    (tmp / "shipit.yaml").write_text(json.dumps(cfg))
    sock_port = _free_port()
    shipit = str(Path(sys.executable).with_name("shipit"))
    cmd = ["taskset", "-c", str(cpu), shipit, "up", "-c", str(tmp / "shipit.yaml")]
    cmd += ["--port", str(sock_port), "--log-level", "warning"]
    log = tmp / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{sock_port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if json.loads(r.read())["ready_replicas"] == len(urls):
                    return proc, url, log
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become ready:\n" + log.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _stream(session: aiohttp.ClientSession, url: str) -> float | None:
    """TTFT in seconds of one streamed chat completion, or None if it failed."""
    t0 = time.perf_counter()
    ttft = None
    async with session.post(
        url + "/v1/chat/completions", data=BODY, headers={"content-type": "application/json"}
    ) as resp:
        if resp.status != 200:
            return None
        async for _chunk in resp.content.iter_any():
            if ttft is None:
                ttft = time.perf_counter() - t0
    return ttft


async def open_loop(urls: list[str], rate: float, n: int) -> list[float]:
    """``n`` requests at ``rate``/s spread over ``urls`` (one per fake, or the gateway)."""
    ttfts: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_stream(session, urls[i % len(urls)])))
        for t in await asyncio.gather(*tasks):
            if t is not None:
                ttfts.append(t)
    return ttfts


async def closed_loop(urls: list[str], concurrency: int, seconds: float) -> float:
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                if await _stream(session, urls[k % len(urls)]) is not None:
                    done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [start_fake(1) for _ in range(2)]
    fake_urls = [u for _, u in fakes]
    gw, gw_url, _log = start_gateway(fake_urls, 0)
    try:
        run = uvloop.run
        run(open_loop(fake_urls, args.rate, 300))  # warm up both paths
        run(open_loop([gw_url], args.rate, 300))
        direct = run(open_loop(fake_urls, args.rate, args.requests))
        via = run(open_loop([gw_url], args.rate, args.requests))
        direct_rps = run(closed_loop(fake_urls, args.concurrency, args.seconds))
        via_rps = run(closed_loop([gw_url], args.concurrency, args.seconds))
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        for p, _ in fakes:
            p.terminate()
            p.wait(timeout=10)
    ms = 1000.0
    result: dict[str, Any] = {
        "rate_req_s": args.rate,
        "requests": args.requests,
        "direct_ttft_p50_ms": _pct(direct, 50) * ms,
        "direct_ttft_p99_ms": _pct(direct, 99) * ms,
        "gateway_ttft_p50_ms": _pct(via, 50) * ms,
        "gateway_ttft_p99_ms": _pct(via, 99) * ms,
        "added_ttft_p50_ms": (_pct(via, 50) - _pct(direct, 50)) * ms,
        "added_ttft_p99_ms": (_pct(via, 99) - _pct(direct, 99)) * ms,
        "completed_direct": len(direct),
        "completed_gateway": len(via),
        "closed_loop_concurrency": args.concurrency,
        "direct_streamed_req_s": direct_rps,
        "gateway_streamed_req_s_one_core": via_rps,
        "cpus": os.cpu_count(),
        "note": "gateway pinned to CPU 0; fakes and the Python load generator share CPU 1",
    }
    for k, v in result.items():
        print(f"{k:36s} {v:.2f}" if isinstance(v, float) else f"{k:36s} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
