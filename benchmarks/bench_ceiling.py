"""How much load one core of ``shipit bench`` can generate before it, not the server, limits.

Prints and writes JSON (``benchmarks/results/bench_ceiling.json``, or ``--out``):
- the highest open-loop request rate sent on time (send lag P99 <= 10 ms, >= 95% of the asked
  rate, 16-token streams completing within 25 ms at P50) against an instant local server;
- the most concurrent streams read without stretching them (E2E P99 within 15% + 10 ms of one
  stream alone) when the server sends 32 tokens 20 ms apart (50 tokens/s per stream).
The generator is pinned to one CPU and the instant server (plain asyncio, a child process) to
another when the machine has two; both processes' CPU use is recorded per step, so a step the
server limited shows up as a server near 100% with a generator well below it.

Run: ``uv run python benchmarks/bench_ceiling.py [--seconds-per-step 2] [--out PATH]``.
Goal: the generator must not be the bottleneck of the runs we publish; compare a
run's rate and concurrency with these figures (``shipit bench self-check`` prints the same).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from shipit.bench.selfcheck import CeilingStep, measure_ceiling

RESULTS = Path(__file__).parent / "results" / "bench_ceiling.json"


def show(step: CeilingStep) -> None:
    lag = "-" if step.send_lag_p99_ms is None else f"{step.send_lag_p99_ms:.1f}"
    e2e = "-" if step.e2e_p50_ms is None else f"{step.e2e_p50_ms:.1f}"
    server = "-" if step.server_cpu is None else f"{step.server_cpu:.0%}"
    print(
        f"{step.kind:8} {step.target:7g}  sent {step.achieved_rps:7.1f}/s  lag P99 {lag:>6} ms  "
        f"E2E P50 {e2e:>7} ms  errors {step.errors}  CPU generator {step.generator_cpu:4.0%} "
        f"server {server:>4}  {'ok' if step.sustained else 'NOT sustained'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds-per-step", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ceiling = measure_ceiling(seconds_per_step=args.seconds_per_step, on_step=show)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"\ngenerator ceiling on one core: {ceiling.max_rate_rps:g} requests/s (16-token streams); "
        f"{ceiling.max_streams} concurrent streams at {1e3 / ceiling.stream_itl_ms:g} tokens/s "
        f"each ({ceiling.max_streams * 1e3 / ceiling.stream_itl_ms:g} chunks/s)"
    )
    result = {
        "benchmark": "bench_ceiling",
        "created_unix_s": time.time(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": load,
        },
        **asdict(ceiling),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
