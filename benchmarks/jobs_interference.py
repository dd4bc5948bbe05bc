"""Interactive time to first token with and without a concurrent batch, against a real
``shipit up`` with simulated replicas (the same fleet for both phases).

Phase 1: closed-loop interactive streams only (``--concurrency`` clients, ``--requests`` in
all). Phase 2: a batch of ``--lines`` lines is submitted through the Batches API, then the same
interactive load runs while the batch does. Reports TTFT P50 / P99 of both phases, the
ratio, and how long the batch took against its completion window (``--window``); the JSON
also holds the gateway's job-slot decision once a second (``/shipit/status``'s ``jobs``).
``--finish-by none`` turns pacing to the window off. Run:

    uv run python benchmarks/jobs_interference.py [--lines 1500] [--window 1h] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

MODEL = "llama-3.1-8b"
SHIPIT = str(Path(sys.executable).with_name("shipit"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(root: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    cfg = {
        "alerts": {"enabled": False},
        "jobs": {
            "store_path": str(root / "jobs.sqlite3"),
            "max_share": args.max_share,
            "idle_share": args.idle_share,
            "ttft_tolerance": None if args.no_guard else args.ttft_tolerance,
            "yield_to_interactive": not args.no_yield,
            "finish_by": None if args.finish_by == "none" else float(args.finish_by),
        },
        "deployments": [
            {
                "name": "sim",
                "model": MODEL,
                "simulate": f"H100:{MODEL}",
                "replicas": args.replicas,
                "queueing": {"max_concurrency": args.max_concurrency},
                "replica_args": ["--log-level", "warning"],
            }
        ],
    }
    (root / "shipit.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = (root / "up.log").open("wb")
    proc = subprocess.Popen(
        [SHIPIT, "up", "--config", str(root / "shipit.yaml"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).json().get("ready_replicas") == args.replicas:
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("replicas never became ready; see " + str(root / "up.log"))


async def one_stream(client: httpx.AsyncClient, url: str, i: int, max_tokens: int) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"interactive question {i}"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    t0 = time.perf_counter()
    ttft = None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            compact = line.replace(" ", "")
            if ttft is None and '"content":"' in compact and '"content":""' not in compact:
                ttft = time.perf_counter() - t0  # the first chunk with text
    if ttft is None:
        raise RuntimeError(f"stream {i} ended without a token (HTTP {r.status_code})")
    return ttft


async def interactive(url: str, args: argparse.Namespace) -> list[float]:
    ttfts: list[float] = []
    counter = iter(range(args.requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            ttfts.append(await one_stream(client, url, i, args.max_tokens))

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(args.concurrency)))
    return ttfts


def submit_batch(url: str, lines: int, max_tokens: int, window: str) -> str:
    content = b"".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"batch document {i}"}],
                    "max_tokens": max_tokens,
                },
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )
    f = httpx.post(
        url + "/v1/files",
        files={"file": ("in.jsonl", content)},
        data={"purpose": "batch"},
        timeout=60,
    ).json()
    req = {
        "input_file_id": f["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": window,
    }
    batch: dict[str, Any] = httpx.post(url + "/v1/batches", json=req, timeout=60).json()
    return str(batch["id"])


def watch_jobs(url: str, t0: float, out: list[dict[str, Any]], done: threading.Event) -> None:
    """The gateway's job-slot decision once a second (``/shipit/status``'s ``jobs``)."""
    with httpx.Client(timeout=5) as client:
        while not done.wait(1.0):
            try:
                jobs = client.get(url + "/shipit/status").json().get("jobs")
            except (httpx.HTTPError, ValueError):
                continue
            if jobs:
                out.append({"t_s": round(time.monotonic() - t0, 1), **jobs})


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-concurrency", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=4, help="interactive clients")
    ap.add_argument("--requests", type=int, default=300, help="interactive requests per phase")
    ap.add_argument("--max-tokens", type=int, default=32, help="interactive answer length")
    ap.add_argument("--lines", type=int, default=1500, help="batch lines")
    ap.add_argument("--line-tokens", type=int, default=64, help="batch answer length")
    ap.add_argument("--max-share", type=float, default=0.5)
    ap.add_argument("--idle-share", type=float, default=1.0)
    ap.add_argument("--ttft-tolerance", type=float, default=0.1, help="the jobs' TTFT guard")
    ap.add_argument("--no-guard", action="store_true", help="jobs.ttft_tolerance: null")
    ap.add_argument("--no-yield", action="store_true", help="jobs.yield_to_interactive: false")
    ap.add_argument("--window", default="1h", help="the batch's completion window")
    ap.add_argument(
        "--finish-by",
        default="0.5",
        help="jobs.finish_by: pace batch lines to finish by this fraction of the window; "
        "'none': no pacing",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep shipit's log and config here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep
        proc, url = start(root, args)
        try:
            asyncio.run(interactive(url, argparse.Namespace(**{**vars(args), "requests": 20})))
            alone = asyncio.run(interactive(url, args))
            t0 = time.monotonic()
            pace: list[dict[str, Any]] = []
            done = threading.Event()
            watcher = threading.Thread(target=watch_jobs, args=(url, t0, pace, done), daemon=True)
            watcher.start()
            bid = submit_batch(url, args.lines, args.line_tokens, args.window)
            time.sleep(1.0)  # the batch is running before the interactive load starts
            t1 = time.monotonic()
            mixed = asyncio.run(interactive(url, args))
            mixed_s = time.monotonic() - t1
            batch = httpx.get(f"{url}/v1/batches/{bid}", timeout=10).json()
            during = batch["request_counts"]["completed"]
            while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.5)
                batch = httpx.get(f"{url}/v1/batches/{bid}", timeout=10).json()
            batch_s = time.monotonic() - t0
            done.set()
            watcher.join(timeout=5)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rows = {
        "interactive only": alone,
        f"with a {args.lines}-line batch": mixed,
    }
    print("| phase | requests | TTFT P50 ms | TTFT P99 ms |\n|---|---|---|---|")
    for name, xs in rows.items():
        print(f"| {name} | {len(xs)} | {pct(xs, 50) * 1e3:.1f} | {pct(xs, 99) * 1e3:.1f} |")
    ratio = pct(mixed, 99) / pct(alone, 99)
    print(
        f"\nTTFT P99 with the batch / without: {ratio:.3f}; batch {batch['status']} in "
        f"{batch_s:.1f} s (window {args.window}), {during} lines done during the "
        f"{mixed_s:.0f} s interactive phase"
    )
    if args.json:
        out = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "alone_ttft_s": alone,
            "mixed_ttft_s": mixed,
            "p99_ratio": ratio,
            "batch_status": batch["status"],
            "batch_s": batch_s,
            "batch_lines_during_interactive": during,
            "interactive_phase_s": mixed_s,
            "jobs_status_each_second": pace,
        }
        args.json.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
