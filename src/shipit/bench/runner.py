"""Drives load: open-loop arrivals at their scheduled times, or a closed loop of N sessions.

Owns scheduling, multi-turn session flow (history, think time) and the live counters a
progress display reads. Talks to the network only through a ``Sender``; knows nothing about
metrics, tables or files. The dispatcher records when each request was *due* as well as when it
was sent, so a report can show whether the generator itself fell behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Protocol

from shipit.bench.client import Sender
from shipit.bench.records import Arrival, RequestRecord, Session


class ProgressSink(Protocol):
    def update(self, *, done: int, total: int, in_flight: int, errors: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PointResult:
    """Everything one load point measured. ``t0_ns`` is the perf_counter origin of the run."""

    mode: str  # "rate", "concurrency" or "trace"
    value: float  # requests/s, sessions in flight, or the trace speed
    t0_ns: int
    started_unix_s: float
    records: tuple[RequestRecord, ...]


class _Counters:
    __slots__ = ("done", "errors", "in_flight", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.in_flight = 0


async def _run_session(
    sender: Sender,
    index: int,
    session: Session,
    scheduled_ns: int | None,
    out: list[RequestRecord],
    counters: _Counters,
) -> None:
    history: list[dict[str, str]] = []
    last = len(session.turns) - 1
    for t, turn in enumerate(session.turns):
        if t > 0 and session.think_time_s > 0:
            await asyncio.sleep(session.think_time_s)
        counters.in_flight += 1
        outcome = await sender.send(
            session=index,
            turn=t,
            model=session.model,
            history=history,
            current=turn,
            scheduled_ns=scheduled_ns if t == 0 else None,
            keep_text=t < last,
        )
        counters.in_flight -= 1
        counters.done += 1
        out.append(outcome.record)
        if not outcome.record.ok:
            counters.errors += 1
            counters.done += last - t  # the rest of the session is not sent
            return
        if t < last:
            history = [
                *history,
                {"role": "user", "content": turn.prompt},
                {"role": "assistant", "content": outcome.text},
            ]


async def _tick(counters: _Counters, sink: ProgressSink | None, every_s: float = 0.2) -> None:
    while sink is not None:
        sink.update(
            done=counters.done,
            total=counters.total,
            in_flight=counters.in_flight,
            errors=counters.errors,
        )
        await asyncio.sleep(every_s)


async def _with_ticker(
    counters: _Counters, sink: ProgressSink | None, work: asyncio.Task[None]
) -> None:
    ticker = asyncio.create_task(_tick(counters, sink))
    try:
        await work
    finally:
        ticker.cancel()
        if sink is not None:
            sink.update(
                done=counters.done, total=counters.total, in_flight=0, errors=counters.errors
            )


async def run_open_loop(
    sender: Sender,
    arrivals: list[Arrival],
    *,
    mode: str = "rate",
    value: float = 0.0,
    progress: ProgressSink | None = None,
) -> PointResult:
    """Send each arrival's session at its offset, whatever is still in flight (open loop)."""
    records: list[RequestRecord] = []
    counters = _Counters(sum(len(a.session.turns) for a in arrivals))
    started = time.time()
    t0 = perf_counter_ns()

    async def dispatch() -> None:
        tasks: set[asyncio.Task[None]] = set()
        for i, arrival in enumerate(arrivals):
            due = t0 + int(arrival.offset_s * 1e9)
            delay_ns = due - perf_counter_ns()
            # Sleep when early; when late, still yield so started requests make progress.
            await asyncio.sleep(delay_ns / 1e9 if delay_ns > 0 else 0)
            task = asyncio.create_task(
                _run_session(sender, i, arrival.session, due, records, counters)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*tasks)

    await _with_ticker(counters, progress, asyncio.create_task(dispatch()))
    return PointResult(mode, value, t0, started, tuple(records))


async def run_closed_loop(
    sender: Sender,
    sessions: Iterable[Session],
    *,
    concurrency: int,
    progress: ProgressSink | None = None,
) -> PointResult:
    """Keep ``concurrency`` sessions in flight; each worker starts the next when one ends."""
    todo = list(sessions)
    records: list[RequestRecord] = []
    counters = _Counters(sum(len(s.turns) for s in todo))
    queue: Iterator[tuple[int, Session]] = iter(enumerate(todo))
    started = time.time()
    t0 = perf_counter_ns()

    async def worker() -> None:
        for index, session in queue:  # a shared iterator: each session is taken once
            await _run_session(sender, index, session, None, records, counters)

    async def all_workers() -> None:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

    await _with_ticker(counters, progress, asyncio.create_task(all_workers()))
    return PointResult("concurrency", float(concurrency), t0, started, tuple(records))
