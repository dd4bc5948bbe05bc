"""Replica server benchmark: HTTP overhead over the engine, and simulated replicas per core.

Prints and writes JSON (``benchmarks/results/replica.json``):

1. **HTTP vs direct engine.** The same work (``--requests`` greedy requests of
   ``--tokens`` tokens each, ignore_eos, the default model SmolLM2-135M on the CPU engine,
   ``max_num_seqs`` = requests) run by ``LLMEngine.generate`` in this process, then streamed
   over SSE from a real ``shipit replica`` process by concurrent aiohttp clients. Tokens/s
   of each and the overhead in percent. Both include prefill; the HTTP client shares the
   machine's two cores with the server.
2. **Simulated replicas per core.** K ``shipit replica --simulate H100:llama-3.1-70b:tp4``
   processes pinned to ONE core (``sched_setaffinity``), the load generator pinned to the
   other. Stated load per replica: ``--streams`` concurrent closed-loop streaming clients,
   prompts of 128 words, 64 output tokens each. For each K: measured TPOT P50 against the
   roofline's TPOT for that batch, the replica core's CPU use, and whether the replicas keep
   time (P50 TPOT within 10 % of the model). The largest K that keeps time is reported.

Run: ``uv run python benchmarks/replica.py [--replicas 10 20 30] [--seconds 8]``.
Goal: one core hosts >= 20 simulated replicas under the stated load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).parent / "results" / "replica.json"
SHIPIT = str(Path(sys.executable).with_name("shipit"))
SIM = "H100:llama-3.1-70b:tp4"
SIM_MODEL = "llama-3.1-70b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], core: int | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    proc = subprocess.Popen(
        [SHIPIT, "replica", "--port", str(port), "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin,
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_healthy(session: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never became healthy")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


async def stream_one(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, float, float]:
    """(content chunks, seconds to the first, seconds from the first to the last)."""
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    async with session.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for data in r.content.iter_any():
            count = data.count(b'"text"')
            if count:
                last = time.perf_counter()
                if n == 0:
                    first = last
                n += count
    return n, first - t0, last - first


def direct_engine(requests: int, tokens: int) -> float:
    from shipit.engine.engine import EngineConfig, LLMEngine
    from shipit.engine.loader import DEFAULT_MODEL, load_model
    from shipit.engine.sampling import SamplingParams

    engine = LLMEngine.from_loaded(load_model(DEFAULT_MODEL), EngineConfig(max_num_seqs=requests))
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    prompts = [f"Write a story about the number {i}." for i in range(requests)]
    engine.generate(prompts[:1], SamplingParams(max_tokens=2))  # warm-up
    t0 = time.perf_counter()
    results = engine.generate(prompts, params)
    wall = time.perf_counter() - t0
    return sum(len(ids) for ids, _ in results) / wall


async def through_http(requests: int, tokens: int) -> float:
    from shipit.engine.loader import DEFAULT_MODEL

    proc, url = start(["--max-num-seqs", str(requests)], core=None)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, url, 120)
            body = {
                "model": DEFAULT_MODEL,
                "max_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
            }
            await stream_one(session, url, body | {"prompt": "warm up", "max_tokens": 2})
            t0 = time.perf_counter()
            done = await asyncio.gather(
                *(
                    stream_one(
                        session, url, body | {"prompt": f"Write a story about the number {i}."}
                    )
                    for i in range(requests)
                )
            )
            wall = time.perf_counter() - t0
    finally:
        stop([proc])
    return sum(n for n, _, _ in done) / wall


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


async def closed_loop(
    session: aiohttp.ClientSession, url: str, until: float, tpots: list[float], seed: int
) -> None:
    i = 0
    while time.perf_counter() < until:
        words = " ".join(f"w{(seed * 7 + i * 13 + j) % 5000}" for j in range(128))
        body = {"model": SIM_MODEL, "prompt": words, "max_tokens": 64, "stream": True}
        n, _, span = await stream_one(session, url, body)
        if n > 1:
            tpots.append(span / (n - 1))
        i += 1


def modelled_tpot_s(streams: int) -> float:
    from shipit.capacity import Deployment, load_catalog
    from shipit.engine.simulated import StepShape, roofline_step_time

    catalog = load_catalog()
    d = Deployment(
        model=catalog.model(SIM_MODEL),
        gpu=catalog.gpu("H100"),
        tp=4,
        max_num_seqs=32,
        max_num_batched_tokens=512,
    )
    return roofline_step_time(d)(StepShape(0, 0, 0, streams, 160))


async def replicas_per_core(
    counts: list[int], streams: int, seconds: float
) -> list[dict[str, Any]]:
    cores = sorted(os.sched_getaffinity(0))
    replica_core, client_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {client_core})
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    rows = []
    model_s = modelled_tpot_s(streams)
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for k in counts:
                while len(procs) < k:
                    proc, url = start(["--simulate", SIM, "--max-num-seqs", "32"], replica_core)
                    procs.append(proc)
                    urls.append(url)
                await asyncio.gather(*(wait_healthy(session, u, 300) for u in urls))
                pids = [p.pid for p in procs]
                tpots: list[float] = []
                cpu0, t0 = cpu_seconds(pids), time.perf_counter()
                until = t0 + seconds
                await asyncio.gather(
                    *(
                        closed_loop(session, u, until, tpots, seed=i * streams + s)
                        for i, u in enumerate(urls)
                        for s in range(streams)
                    )
                )
                wall = time.perf_counter() - t0
                cpu = (cpu_seconds(pids) - cpu0) / wall
                p50 = statistics.median(tpots)
                row = {
                    "replicas": k,
                    "streams_per_replica": streams,
                    "requests": len(tpots),
                    "tpot_p50_ms": 1000 * p50,
                    "tpot_modelled_ms": 1000 * model_s,
                    "slowdown": p50 / model_s,
                    "replica_core_cpu": cpu,
                    "tokens_per_s": len(tpots) * 64 / wall,
                    "keeps_time": p50 <= 1.10 * model_s,
                }
                print(
                    f"  {k:3d} replicas x {streams} streams: TPOT P50 {row['tpot_p50_ms']:.1f} ms "
                    f"(model {row['tpot_modelled_ms']:.1f} ms, x{row['slowdown']:.2f}), "
                    f"replica core {100 * cpu:.0f}% busy, {row['tokens_per_s']:.0f} tokens/s, "
                    f"{'keeps time' if row['keeps_time'] else 'FALLS BEHIND'}",
                    flush=True,
                )
                rows.append(row)
    finally:
        stop(procs)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--replicas", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    args = parser.parse_args()
    # Parts run separately update one results file.
    out: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if not args.skip_http:
        print(f"HTTP vs direct engine: {args.requests} x {args.tokens} tokens, default model")
        direct = direct_engine(args.requests, args.tokens)
        http = asyncio.run(through_http(args.requests, args.tokens))
        overhead = 100 * (direct - http) / direct
        print(
            f"  direct engine {direct:.1f} tokens/s, through HTTP+SSE {http:.1f} tokens/s, "
            f"overhead {overhead:.1f}%",
            flush=True,
        )
        out["http_vs_direct"] = {
            "requests": args.requests,
            "tokens": args.tokens,
            "direct_tokens_per_s": direct,
            "http_tokens_per_s": http,
            "overhead_perc": overhead,
        }
    if not args.skip_sim:
        simulated(args, out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


def simulated(args: argparse.Namespace, out: dict[str, Any]) -> None:
    print(
        f"Simulated replicas ({SIM}) on one core, {args.streams} closed-loop streams each, "
        f"128-word prompts, 64 tokens, {args.seconds:.0f} s per step:"
    )
    rows = asyncio.run(replicas_per_core(args.replicas, args.streams, args.seconds))
    kept = [r["replicas"] for r in rows if r["keeps_time"]]
    out["simulated"] = rows
    out["max_replicas_keeping_time"] = max(kept) if kept else 0
    print(
        f"  one core sustains {out['max_replicas_keeping_time']} simulated replicas "
        "(largest tested count whose TPOT P50 stays within 10% of the model)"
    )


if __name__ == "__main__":
    main()
