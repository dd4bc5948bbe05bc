"""The fleet simulator against a real ``--simulate`` replica, in wall-clock time.

A ``shipit replica --simulate H100:llama-3.1-8b`` process gets ``--requests`` concurrent
streamed completions of ``--prompt-words`` words each (the simulated tokenizer makes one token
per word) and ``--output-tokens`` tokens; the client records each request's TTFT and E2E. The
fleet simulator (``sim.fleet``: one pre-warmed replica of the same model, the engine's default
scheduler settings) runs the same arrivals. Prints both, request by request in TTFT order,
and writes ``benchmarks/results/sim_vs_replica.json``. The replica adds what the simulator
leaves out (HTTP, tokenization; its host time per step runs under the previous step, as on an
engine that schedules asynchronously), so it runs a little slower; the unit
test ``tests/unit/sim/test_batched_prefill.py`` makes the same comparison on the replica's
engine with a fake clock, where the two agree exactly.

Run: ``uv run python benchmarks/sim_vs_replica.py [--requests 16] [--prompt-words 7000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from shipit.config.gateway import DeploymentConfig, QueueingConfig
from shipit.engine.sim_timing import ReplicaModel
from shipit.sim.fleet import FleetSim
from shipit.sim.policies import FixedFleet
from shipit.sim.results import SimRequest

RESULTS = Path(__file__).parent / "results" / "sim_vs_replica.json"
SHIPIT = str(Path(sys.executable).with_name("shipit"))
GPU, MODEL = "H100", "llama-3.1-8b"
SPEC = f"{GPU}:{MODEL}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_replica() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [SHIPIT, "replica", "--port", str(port), "--log-level", "warning", "--simulate", SPEC],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the replica did not start")


async def one(
    session: aiohttp.ClientSession, url: str, prompt: str, tokens: int, t0: float
) -> dict[str, float]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "stream": True}
    sent = time.perf_counter() - t0
    first = None
    async with session.post(url + "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return {"sent_s": sent, "ttft_s": (first or end) - sent, "e2e_s": end - sent}


async def measure(url: str, n: int, words: int, tokens: int) -> list[dict[str, float]]:
    prompts = [" ".join(f"r{i}w{j}" for j in range(words)) for i in range(n)]
    async with aiohttp.ClientSession() as session:
        await one(session, url, "warm up", 2, time.perf_counter())
        t0 = time.perf_counter()
        return list(await asyncio.gather(*(one(session, url, p, tokens, t0) for p in prompts)))


def simulate(sent_s: list[float], words: int, tokens: int) -> list[dict[str, float]]:
    trace = [SimRequest(t, words, tokens) for t in sent_s]
    deployment = DeploymentConfig(
        name="sim", replicas=0, queueing=QueueingConfig(max_concurrency=len(trace))
    )
    sim = FleetSim(
        FixedFleet(1), ReplicaModel(gpu=GPU, model=MODEL), deployment, initial_replicas=1
    )
    result = sim.run(trace, 600.0)
    out = sorted(result.requests, key=lambda r: int(r.request_id[1:]))
    return [{"ttft_s": r.ttft_s or 0.0, "e2e_s": r.e2e_s or 0.0} for r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-words", type=int, default=7_000)
    ap.add_argument("--output-tokens", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    proc, url = start_replica()
    try:
        real = asyncio.run(measure(url, args.requests, args.prompt_words, args.output_tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    sim = simulate([r["sent_s"] for r in real], args.prompt_words, args.output_tokens)
    rows: list[dict[str, Any]] = []
    for i in sorted(range(len(real)), key=lambda i: real[i]["ttft_s"]):
        rows.append({"request": i, "replica": real[i], "sim": sim[i]})
    print(f"{args.requests} x {args.prompt_words}-token prompts, {args.output_tokens} out, {SPEC}")
    print(f"{'req':>4} {'replica TTFT':>13} {'sim TTFT':>9} {'diff':>7}")
    for row in rows:
        a, b = row["replica"]["ttft_s"], row["sim"]["ttft_s"]
        print(f"{row['request']:>4} {a:>12.3f}s {b:>8.3f}s {(b - a) / a:>+7.1%}")
    ttfts = [(row["replica"]["ttft_s"], row["sim"]["ttft_s"]) for row in rows]
    n = len(ttfts) - 1
    if n:
        gap_real = (ttfts[-1][0] - ttfts[0][0]) / n
        gap_sim = (ttfts[-1][1] - ttfts[0][1]) / n
        print(f"one more prompt's prefill: replica {gap_real:.3f}s, sim {gap_sim:.3f}s, "
              f"{(gap_sim - gap_real) / gap_real:+.1%}")  # fmt: skip
    last_real = max(r["e2e_s"] + r["sent_s"] for r in real)
    last_sim = max(s["e2e_s"] + r["sent_s"] for r, s in zip(real, sim, strict=True))
    print(f"last answer: replica {last_real:.3f}s, sim {last_sim:.3f}s, "
          f"{(last_sim - last_real) / last_real:+.1%}")  # fmt: skip
    report = {
        "gpu": GPU,
        "model": MODEL,
        "requests": args.requests,
        "prompt_tokens": args.prompt_words,
        "output_tokens": args.output_tokens,
        "last_answer_s": {"replica": round(last_real, 4), "sim": round(last_sim, 4)},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
