"""The runner with a fake Sender: closed-loop concurrency, sessions, open-loop ordering."""

from __future__ import annotations

import asyncio
from time import perf_counter_ns

from shipit.bench.client import Outcome
from shipit.bench.records import Arrival, RequestRecord, Session, Turn
from shipit.bench.runner import run_closed_loop, run_open_loop


class FakeSender:
    """Answers at once (one event-loop turn), remembering what it was asked."""

    def __init__(self, fail_turn: int | None = None) -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls: list[tuple[int, int, list[dict[str, str]], int | None]] = []
        self.fail_turn = fail_turn

    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.calls.append((session, turn, history, scheduled_ns))
        start = perf_counter_ns()
        await asyncio.sleep(0)
        self.in_flight -= 1
        error = "http_500" if turn == self.fail_turn else None
        record = RequestRecord(
            session,
            turn,
            model,
            scheduled_ns,
            start,
            perf_counter_ns(),
            (start,),
            1,
            1,
            "usage",
            error,
        )
        return Outcome(record, f"reply{session}.{turn}" if keep_text else "")


class Sink:
    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def update(self, *, done: int, total: int, in_flight: int, errors: int) -> None:
        self.last = {"done": done, "total": total, "in_flight": in_flight, "errors": errors}


def sessions(n: int, turns: int = 1) -> list[Session]:
    return [Session("m", tuple(Turn(f"q{i}.{t}", 1, 1) for t in range(turns))) for i in range(n)]


def test_closed_loop_keeps_at_most_c_in_flight_and_sends_everything() -> None:
    sender, sink = FakeSender(), Sink()
    point = asyncio.run(run_closed_loop(sender, sessions(20), concurrency=4, progress=sink))
    assert len(point.records) == 20 and sender.peak == 4
    assert sorted(r.session for r in point.records) == list(range(20))
    assert sink.last == {"done": 20, "total": 20, "in_flight": 0, "errors": 0}


def test_sessions_carry_history_and_stop_at_an_error() -> None:
    sender = FakeSender()
    asyncio.run(run_closed_loop(sender, sessions(1, turns=3), concurrency=1))
    histories = [h for _, _, h, _ in sender.calls]
    assert [len(h) for h in histories] == [0, 2, 4]
    assert histories[2][1] == {"role": "assistant", "content": "reply0.0"}
    assert histories[2][2] == {"role": "user", "content": "q0.1"}
    failing, sink = FakeSender(fail_turn=1), Sink()
    point = asyncio.run(
        run_closed_loop(failing, sessions(2, turns=3), concurrency=2, progress=sink)
    )
    assert len(point.records) == 4  # turn 2 of each session is never sent
    assert sink.last["done"] == 6 and sink.last["errors"] == 2


def test_open_loop_sends_every_arrival_with_its_due_time() -> None:
    sender = FakeSender()
    arrivals = [Arrival(i * 0.001, s) for i, s in enumerate(sessions(10))]
    point = asyncio.run(run_open_loop(sender, arrivals, mode="rate", value=1000.0))
    assert len(point.records) == 10
    dues = [r.scheduled_ns for r in sorted(point.records, key=lambda r: r.session)]
    assert all(d is not None for d in dues)
    assert [d - point.t0_ns for d in dues if d is not None] == [i * 1_000_000 for i in range(10)]
    assert all(r.start_ns >= (r.scheduled_ns or 0) for r in point.records)
