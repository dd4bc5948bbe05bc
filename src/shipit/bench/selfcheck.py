"""Self-check: the generator's own ceiling against an instant server on this machine.

Owns the search for (a) the highest open-loop request rate the generator sends on time and
completes, and (b) the most concurrent streams it reads without stretching the inter-token
gaps a server injects. The server runs in a child process (``instant_server``), pinned to
another CPU when there is one; the generator runs here, on one CPU. Every step records both
processes' CPU use, so a ceiling set by the server, not the generator, is visible. Must not
print; callers render ``Ceiling``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shipit.bench.client import ClientPool, HttpSender
from shipit.bench.config import TargetConfig
from shipit.bench.metrics import summarize
from shipit.bench.records import Arrival, Session, Turn
from shipit.bench.runner import run_closed_loop, run_open_loop

RATE_STEPS_RPS = (50, 100, 200, 400, 800, 1600, 3200, 6400)
STREAM_STEPS = (16, 32, 64, 128, 256, 512, 1024, 2048)
MAX_SEND_LAG_P99_MS = 10.0  # sent later than this after "due": not keeping the schedule
MAX_E2E_P50_MS = 25.0  # an instant 16-token answer taking longer: responses are queueing
STREAM_ITL_S = 0.02  # each stream at 50 tokens/s, a fast real decode
STREAM_TOKENS = 32
STREAM_E2E_SLACK = 1.15  # E2E P99 may be 15% (+10 ms) above one stream's E2E alone


@dataclass(frozen=True, slots=True)
class CeilingStep:
    kind: str  # "rate" or "streams"
    target: float  # requests/s asked, or streams kept open
    requests: int
    achieved_rps: float  # requests sent per second over the sending window
    send_lag_p99_ms: float | None
    e2e_p50_ms: float | None
    itl_p50_ms: float | None
    errors: int
    generator_cpu: float  # share of one CPU the generator used during the step
    server_cpu: float | None  # the same for the instant server (Linux only)
    sustained: bool


@dataclass(frozen=True, slots=True)
class Ceiling:
    max_rate_rps: float
    max_streams: int
    stream_itl_ms: float
    generator_cpu_id: int | None
    server_cpu_id: int | None
    steps: tuple[CeilingStep, ...]


def _proc_cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:  # noqa: PTH123
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def instant_server(*, tokens: int, itl_s: float, cpu: int | None) -> Iterator[tuple[str, int]]:
    """Start ``python -m shipit.bench.instant_server``; yields (base URL, pid)."""
    cmd = [
        sys.executable,
        "-m",
        "shipit.bench.instant_server",
        "--tokens",
        str(tokens),
        "--itl-s",
        str(itl_s),
    ] + (["--cpu", str(cpu)] if cpu is not None else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.isdigit():
            raise RuntimeError(f"the instant server did not start (printed {line!r})")
        yield f"http://127.0.0.1:{line}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def _sessions(count: int, tokens: int) -> list[Session]:
    turn = Turn("ping", 1, tokens)
    return [Session("selfcheck", (turn,)) for _ in range(count)]


async def _step(
    kind: str,
    target: float,
    url: str,
    server_pid: int,
    seconds: float,
    baseline_ms: float | None = None,
) -> CeilingStep:
    tokens = 16 if kind == "rate" else STREAM_TOKENS
    count = max(20, int(target * seconds)) if kind == "rate" else int(target) * 2
    sessions = _sessions(count, tokens)
    async with ClientPool(timeout_s=30.0) as pool:
        sender = HttpSender(pool, TargetConfig(url=url, model="selfcheck"))
        await sender.send(
            session=-1,
            turn=0,
            model="selfcheck",
            history=[],
            current=Turn("ping", 1, 1),
            scheduled_ns=None,
            keep_text=False,
        )
        cpu0, wall0, srv0 = time.process_time(), time.perf_counter(), _proc_cpu_s(server_pid)
        if kind == "rate":
            arrivals = [Arrival(i / target, s) for i, s in enumerate(sessions)]
            point = await run_open_loop(sender, arrivals, mode="rate", value=target)
        else:
            point = await run_closed_loop(sender, sessions, concurrency=int(target))
    wall = time.perf_counter() - wall0
    srv1 = _proc_cpu_s(server_pid)
    s = summarize(point)
    starts = sorted(r.start_ns for r in point.records)
    window_s = (starts[-1] - starts[0]) / 1e9 if len(starts) > 1 else 0.0
    achieved = (len(starts) - 1) / window_s if window_s > 0 else 0.0
    lag = s.send_lag_ms.p99 if s.send_lag_ms else None
    e2e = s.e2e_ms.p50 if s.e2e_ms else None
    itl = s.itl_ms.p50 if s.itl_ms else None
    if kind == "rate":
        ok = (
            achieved >= 0.95 * target
            and lag is not None
            and lag <= MAX_SEND_LAG_P99_MS
            and e2e is not None
            and e2e <= MAX_E2E_P50_MS
        )
    else:
        # A reader that falls behind stretches whole streams (chunks pile up, ITL P50 can even
        # drop): judge E2E against one stream alone (the server's own sleep overshoot included).
        e2e99 = s.e2e_ms.p99 if s.e2e_ms else None
        ok = e2e99 is not None and e2e99 <= (baseline_ms or e2e99) * STREAM_E2E_SLACK + 10.0
    return CeilingStep(
        kind,
        target,
        len(point.records),
        achieved,
        lag,
        e2e,
        itl,
        s.failed,
        (time.process_time() - cpu0) / wall,
        None if srv0 is None or srv1 is None else (srv1 - srv0) / wall,
        ok and s.failed == 0,
    )


def _pin(cpu: int | None) -> set[int] | None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    return before


async def _search(
    kind: str,
    steps: tuple[int, ...],
    url: str,
    pid: int,
    seconds: float,
    on_step: Callable[[CeilingStep], None],
) -> tuple[float, list[CeilingStep]]:
    done: list[CeilingStep] = []
    best = 0.0
    baseline_ms = None
    if kind == "streams":  # one stream alone: what the server's timing gives with no load
        alone = await _step(kind, 1.0, url, pid, seconds)
        done.append(alone)
        on_step(alone)
        baseline_ms = alone.e2e_p50_ms
    for target in steps:
        step = await _step(kind, float(target), url, pid, seconds, baseline_ms)
        done.append(step)
        on_step(step)
        if not step.sustained:
            break
        best = float(target)
    else:
        return best, done
    # One bisection between the last pass and the first failure narrows the figure to ~25%.
    mid = (best + done[-1].target) / 2 if best else done[-1].target / 2
    step = await _step(kind, mid, url, pid, seconds, baseline_ms)
    done.append(step)
    on_step(step)
    return (mid if step.sustained else best), done


def measure_ceiling(
    *,
    seconds_per_step: float = 2.0,
    generator_cpu: int | None = 0,
    server_cpu: int | None = 1,
    on_step: Callable[[CeilingStep], None] | None = None,
) -> Ceiling:
    """Find the generator's ceiling; pins this process to ``generator_cpu`` while it runs."""
    cpus = os.cpu_count() or 1
    if cpus < 2:
        server_cpu = None
    report = on_step or (lambda _s: None)
    before = _pin(generator_cpu)
    try:
        with instant_server(tokens=16, itl_s=0.0, cpu=server_cpu) as (url, pid):
            rate, rate_steps = asyncio.run(
                _search("rate", RATE_STEPS_RPS, url, pid, seconds_per_step, report)
            )
        with instant_server(tokens=STREAM_TOKENS, itl_s=STREAM_ITL_S, cpu=server_cpu) as (url, pid):
            streams, stream_steps = asyncio.run(
                _search("streams", STREAM_STEPS, url, pid, seconds_per_step, report)
            )
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    return Ceiling(
        rate,
        int(streams),
        STREAM_ITL_S * 1e3,
        generator_cpu if before is not None else None,
        server_cpu,
        tuple(rate_steps + stream_steps),
    )
