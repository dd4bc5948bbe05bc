"""Metrics on hand-built records: DESIGN.md's definitions, goodput, errors, token sources."""

from __future__ import annotations

import pytest

from shipit.bench.metrics import max_in_flight, summarize
from shipit.bench.records import RequestRecord
from shipit.bench.runner import PointResult

MS = 1_000_000


def rec(
    start_ms: int,
    chunks_ms: list[int],
    end_ms: int,
    *,
    tokens: int | None = None,
    error: str | None = None,
    source: str = "usage",
    due_ms: int | None = None,
) -> RequestRecord:
    return RequestRecord(
        session=0,
        turn=0,
        model="m",
        scheduled_ns=None if due_ms is None else due_ms * MS,
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
        content_ns=tuple(c * MS for c in chunks_ms),
        input_tokens=10,
        output_tokens=len(chunks_ms) if tokens is None else tokens,
        tokens_source=source,
        error=error,
    )


def point(*records: RequestRecord) -> PointResult:
    return PointResult("rate", 1.0, 0, 0.0, tuple(records))


def test_ttft_tpot_itl_e2e_follow_the_definitions() -> None:
    # TTFT 100, then 4 more tokens 10 ms apart, last byte 5 ms after the last token.
    a = rec(0, [100, 110, 120, 130, 140], 145)
    # TTFT 200, 3 tokens 20 ms apart.
    b = rec(1000, [1200, 1220, 1240], 1240)
    s = summarize(point(a, b))
    assert s.ttft_ms is not None and s.tpot_ms is not None and s.itl_ms is not None
    assert s.e2e_ms is not None
    assert (s.ttft_ms.count, s.ttft_ms.mean) == (2, pytest.approx(150.0))
    assert s.ttft_ms.p50 == pytest.approx(150.0)  # linear interpolation
    assert sorted([a.tpot_ns, b.tpot_ns]) == [pytest.approx(45 / 4 * MS), pytest.approx(20 * MS)]
    assert s.itl_ms.count == 4 + 2  # gaps pooled across requests
    assert s.itl_ms.max == pytest.approx(20.0)
    assert s.e2e_ms.max == pytest.approx(240.0)
    assert s.duration_s == pytest.approx(1.24)
    assert s.request_throughput_rps == pytest.approx(2 / 1.24)
    assert s.output_throughput_tok_s == pytest.approx(8 / 1.24)
    assert (s.completed, s.failed, s.tokens_source) == (2, 0, "usage")


def test_tpot_needs_two_tokens_and_uses_server_counts() -> None:
    one = rec(0, [50], 60)
    assert one.tpot_ns is None
    # The server says 9 tokens arrived in 3 chunks: TPOT divides by 8, not 2.
    packed = rec(0, [50, 60, 70], 90, tokens=9)
    assert packed.tpot_ns == pytest.approx(40 / 8 * MS)
    s = summarize(point(one))
    assert s.tpot_ms is None and s.itl_ms is None


def test_goodput_counts_requests_meeting_every_slo() -> None:
    fast = rec(0, [100, 110, 120], 120)  # ttft 100, tpot 10
    slow_first = rec(0, [400, 410, 420], 420)  # ttft 400
    slow_decode = rec(0, [100, 200, 300], 300)  # tpot 100
    s = summarize(point(fast, slow_first, slow_decode), {"ttft_p99_ms": 300, "tpot_p99_ms": 50})
    assert s.duration_s == pytest.approx(0.42)
    assert s.goodput_rps == pytest.approx(1 / 0.42)
    assert s.slo_attainment == pytest.approx(1 / 3)
    assert s.slo_met == {"ttft_p99_ms": False, "tpot_p99_ms": False}
    lenient = summarize(point(fast), {"ttft_ms": 150})
    assert lenient.slo_met == {"ttft_ms": True} and lenient.slo_attainment == 1.0


def test_errors_are_counted_by_kind_and_left_out_of_latencies() -> None:
    s = summarize(
        point(
            rec(0, [10, 20], 20),
            rec(0, [], 5, error="http_500"),
            rec(0, [], 7, error="http_500"),
            rec(0, [9], 30, error="incomplete"),
        )
    )
    assert (s.requests, s.completed, s.failed) == (4, 1, 3)
    assert s.errors_by_kind == {"http_500": 2, "incomplete": 1}
    assert s.ttft_ms is not None and s.ttft_ms.count == 1


def test_token_source_and_send_lag() -> None:
    s = summarize(
        point(
            rec(0, [5], 9, source="chunks", due_ms=0), rec(10, [15], 19, source="usage", due_ms=8)
        )
    )
    assert s.tokens_source == "mixed"
    assert s.send_lag_ms is not None and s.send_lag_ms.max == pytest.approx(2.0)


def test_max_in_flight_from_start_and_end() -> None:
    rs = [rec(0, [1], 10), rec(5, [6], 15), rec(8, [9], 9), rec(10, [11], 20)]
    assert max_in_flight(rs) == 3
    assert summarize(point()).requests == 0
