"""Added time to first token, two gateways side by side: a paired A/B that this VM's noise
does not swamp.

Run one after the other, the same gateway's added TTFT P50 moves by ±30 % between runs on a
shared 2-core VM, more than most changes to the request path. Here both gateways run at once,
pinned to CPU 0, in front of the same two instant fakes (CPU 1, with the load generator), and
one open loop alternates its requests between them: each sees the same machine at the same
moment, and only their difference is read. Each gets ``--rate``/2 requests a second; the
added TTFT is each one's TTFT minus the fakes' own (measured straight, at the same rate, in
the same round). Rounds swap which gateway gets the even requests.

``--a`` and ``--b`` are ``this`` (this checkout) or an older checkout's ``src/`` (``git
worktree add /tmp/base <commit>``, then ``--b /tmp/base/src``), ``floor`` (the gateway's
server stack and upstream client with a trivial proxy app: ``gateway_floor.py``;
``floor-direct``: the same writing its answers as the gateway does, past ``send``),
``raw-floor`` (a proxy of callbacks only, no server stack: ``gateway_floor_raw.py``),
``raw-floor-tasks`` (the same with a task per request), ``callback-path`` (callbacks only, with
the gateway's own work for a request in them: ``gateway_callback_path.py``), ``stack=NAME``
(the gateway app alone, served by one of ``serving_stacks.py``'s stacks: ``shipit``,
``own-h1``, ``uvicorn``), ``vllm-router=PATH`` for a vllm-router executable (a throwaway venv:
``pip install vllm-router``), or ``venv=PATH`` for this checkout run by another environment's
``shipit`` (another Python: ``UV_PROJECT_ENVIRONMENT=PATH uv sync -p python3.13``).

    uv run python benchmarks/gateway_ttft_ab.py --b /tmp/base/src [--rounds 4] [--rate 1000]
        [--requests 5000] [--out benchmarks/results/gateway_ttft_ab.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
import gateway_overhead as go  # the fakes, the gateway, one streamed request

RESULTS = Path(__file__).parent / "results" / "gateway_ttft_ab.json"


async def paired(urls: list[str], rate: float, n: int) -> list[list[float]]:
    """``n`` streamed requests at ``rate``/s, request i to ``urls[i % len(urls)]``: the TTFTs
    each URL got."""
    out: list[list[float]] = [[] for _ in urls]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(urls)
            tasks.append((k, asyncio.create_task(go._stream(session, urls[k], go.HEADERS))))
        for k, task in tasks:
            ttft = await task
            if ttft is not None:
                out[k].append(ttft)
    return out


def start(which: str, fakes: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    if which in ("floor", "floor-direct"):
        import gateway_floor  # the same server stack with a trivial app

        direct = "1" if which == "floor-direct" else "0"
        return gateway_floor.start_floor(fakes, env={"FLOOR_DIRECT": direct})
    if which in ("raw-floor", "raw-floor-tasks"):
        import gateway_floor_raw  # callbacks only (or with a task a request): no server stack

        return gateway_floor_raw.start_raw_floor(fakes, tasks=which == "raw-floor-tasks")
    if which == "callback-path":
        import gateway_callback_path  # the gateway's own work run from callbacks: a bound

        return gateway_callback_path.start_callback_path(fakes)
    if which.startswith("stack="):  # the gateway app alone, served by one of serving_stacks.py's
        import serving_stacks as ss

        tmp = tempfile.mkdtemp(prefix="ttft-ab-")
        Path(tmp, "gwapp.py").write_text(ss.APP)
        env = {**os.environ, "SHIPIT_BENCH_FAKES": ",".join(fakes), "PYTHONPATH": tmp}
        port = go._free_port()
        argv = ss.stacks(port)[which.split("=", 1)[1]]
        out = subprocess.DEVNULL
        proc = subprocess.Popen(["taskset", "-c", "0", *argv], env=env, cwd=tmp, stdout=out)
        ss.wait_ready(f"http://127.0.0.1:{port}", proc)
        return proc, f"http://127.0.0.1:{port}"
    if which.startswith("vllm-router="):
        proc, url, _ = go.start_vllm_router(which.split("=", 1)[1], fakes, 0)
        return proc, url
    if which.startswith("venv="):  # this checkout under another environment's interpreter
        venv = Path(which.split("=", 1)[1])
        if not (venv / "bin" / "shipit").is_file():
            raise SystemExit(f"{venv}/bin/shipit not found: make it with `uv sync` (see --help)")
        proc, url, _ = go.start_gateway(fakes, 0, venv=venv)
        return proc, url
    src = None if which == "this" else Path(which)
    if src is not None and not (src / "shipit").is_dir():
        raise SystemExit(f"{which} has no shipit/ package: give a checkout's src/ or 'this'")
    proc, url, _ = go.start_gateway(fakes, 0, src)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--a",
        default="this",
        help="'this', a checkout's src/, 'floor[-direct]', 'raw-floor[-tasks]', callback-path, "
        "stack=NAME, "
        "vllm-router=PATH or venv=PATH",
    )
    ap.add_argument("--b", required=True, help="the same choices as --a")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s over both")
    ap.add_argument("--requests", type=int, default=5000, help="per round, over both")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.rounds < 1 or args.rate <= 0 or args.requests < 100:
        raise SystemExit("--rounds >= 1, --rate > 0 and --requests >= 100, please")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    names = [args.a, args.b]
    fakes = [go.start_fake(1) for _ in range(2)]
    urls = [u for _, u in fakes]
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            procs = [start(name, urls) for name in names]
            try:
                gws = [u for _, u in procs]
                order = gws if r % 2 == 0 else gws[::-1]
                uvloop.run(paired(order, args.rate, 600))  # warm up both
                direct = uvloop.run(go.open_loop(urls, args.rate / 2, args.requests // 2))
                got = uvloop.run(paired(order, args.rate, args.requests))
            finally:
                for proc, _ in procs:
                    go.stop(proc)
            if r % 2:
                got.reverse()
            d50, d99 = go._pct(direct, 50), go._pct(direct, 99)
            row = {
                name: {
                    "added_ttft_p50_ms": (go._pct(v, 50) - d50) * 1e3,
                    "added_ttft_p99_ms": (go._pct(v, 99) - d99) * 1e3,
                    "completed": len(v),
                }
                for name, v in zip(names, got, strict=True)
            }
            rounds.append(row)
            cells = [
                f"{n}: +{row[n]['added_ttft_p50_ms']:.3f} / +{row[n]['added_ttft_p99_ms']:.3f} ms"
                for n in names
            ]
            print(f"round {r + 1}: " + " | ".join(cells), flush=True)
    finally:
        for proc, _ in fakes:
            go.stop(proc)
    summary = {
        name: {
            key: statistics.median(row[name][key] for row in rounds)
            for key in ("added_ttft_p50_ms", "added_ttft_p99_ms")
        }
        for name in names
    }
    diffs = [row[args.a]["added_ttft_p50_ms"] - row[args.b]["added_ttft_p50_ms"] for row in rounds]
    result = {
        "a": args.a,
        "b": args.b,
        "rate_per_s_over_both": args.rate,
        "requests_per_round": args.requests,
        "rounds": rounds,
        "median": summary,
        "a_minus_b_p50_ms_per_round": diffs,
        "a_lower_p50_in_rounds": sum(1 for d in diffs if d < 0),
    }
    print("| gateway | added TTFT P50 (median of rounds) | P99 |\n|---|---|---|")
    for name in names:
        s = summary[name]
        print(f"| {name} | {s['added_ttft_p50_ms']:.3f} ms | {s['added_ttft_p99_ms']:.3f} ms |")
    print(f"A minus B, P50, per round (ms): {', '.join(f'{d:+.3f}' for d in diffs)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
