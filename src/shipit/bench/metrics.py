"""Metrics as docs/bench.md defines them, from the records of one load point.

TTFT: sent -> first content chunk. TPOT per request: (E2E - TTFT) / (output_tokens - 1).
ITL: every gap between content chunks, pooled across requests. E2E: sent -> last byte.
Goodput: completed requests per second meeting every SLO given. Percentiles P50/P90/P99 use
linear interpolation (numpy's default, as vLLM's benchmark does). Pure: no IO, no clocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shipit.bench.config import slo_parts
from shipit.bench.records import RequestRecord
from shipit.bench.runner import PointResult

NS_PER_MS = 1e6


@dataclass(frozen=True, slots=True)
class Dist:
    """Summary of a latency distribution, in the unit its owner's name says (``ttft_ms``...)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @staticmethod
    def of(values: np.ndarray) -> Dist | None:
        if values.size == 0:
            return None
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return Dist(
            int(values.size),
            float(values.mean()),
            float(p50),
            float(p90),
            float(p99),
            float(values.max()),
        )

    def at(self, percentile: int) -> float:
        return {50: self.p50, 90: self.p90, 99: self.p99}[percentile]


@dataclass(frozen=True, slots=True)
class Summary:
    mode: str
    value: float
    requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput_rps: float
    output_throughput_tok_s: float
    total_throughput_tok_s: float
    input_tokens: int
    output_tokens: int
    # "usage" (the server's), "tokenizer" (--tokenizer on the streamed text), "chunks" (no usage
    # and no tokenizer: content chunks counted) or "mixed"
    tokens_source: str
    ttft_ms: Dist | None
    tpot_ms: Dist | None
    itl_ms: Dist | None
    e2e_ms: Dist | None
    send_lag_ms: Dist | None  # sent - due, open loop only: the generator's own delay
    max_in_flight: int
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    goodput_rps: float | None = None
    slo_attainment: float | None = None  # share of completed requests meeting every SLO
    slo_met: dict[str, bool] = field(default_factory=dict)  # the percentile targets, as a whole


def _tokens_source(ok: list[RequestRecord]) -> str:
    sources = {r.tokens_source for r in ok}
    return sources.pop() if len(sources) == 1 else ("mixed" if sources else "usage")


def max_in_flight(records: tuple[RequestRecord, ...] | list[RequestRecord]) -> int:
    """Most requests open at once, from start/end times (a +1/-1 sweep)."""
    events = sorted(
        [(r.start_ns, 1) for r in records] + [(r.end_ns, -1) for r in records],
        key=lambda e: (e[0], e[1]),
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _per_request_ms(ok: list[RequestRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ttft = np.array([r.ttft_ns for r in ok if r.ttft_ns is not None], dtype=float) / NS_PER_MS
    tpot = np.array([t for r in ok if (t := r.tpot_ns) is not None], dtype=float) / NS_PER_MS
    e2e = np.array([r.e2e_ns for r in ok], dtype=float) / NS_PER_MS
    return ttft, tpot, e2e


def _pooled_itl_ms(ok: list[RequestRecord]) -> np.ndarray:
    gaps = [np.diff(np.asarray(r.content_ns, dtype=np.int64)) for r in ok if len(r.content_ns) > 1]
    return np.concatenate(gaps).astype(float) / NS_PER_MS if gaps else np.empty(0)


def _meets(r: RequestRecord, limits: list[tuple[str, float]]) -> bool:
    values_ms = {
        "ttft": (r.ttft_ns or 0) / NS_PER_MS,
        "tpot": (r.tpot_ns or 0.0) / NS_PER_MS,
        "e2e": r.e2e_ns / NS_PER_MS,
    }
    return all(values_ms[metric] <= limit for metric, limit in limits)


def _slo(
    ok: list[RequestRecord],
    slo_ms: dict[str, float],
    dists: dict[str, Dist | None],
    duration_s: float,
) -> tuple[float | None, float | None, dict[str, bool]]:
    if not slo_ms:
        return None, None, {}
    limits = [(slo_parts(k)[0], v) for k, v in slo_ms.items()]
    good = sum(1 for r in ok if _meets(r, limits))
    met: dict[str, bool] = {}
    for key, limit in slo_ms.items():
        metric, pct = slo_parts(key)
        dist = dists[metric]
        met[key] = dist is not None and dist.at(pct if pct is not None else 99) <= limit
    attainment = good / len(ok) if ok else 0.0
    return (good / duration_s if duration_s > 0 else 0.0), attainment, met


def summarize(point: PointResult, slo_ms: dict[str, float] | None = None) -> Summary:
    records = point.records
    ok = [r for r in records if r.ok]
    if records:
        duration_s = (max(r.end_ns for r in records) - min(r.start_ns for r in records)) / 1e9
    else:
        duration_s = 0.0
    ttft, tpot, e2e = _per_request_ms(ok)
    dists = {"ttft": Dist.of(ttft), "tpot": Dist.of(tpot), "e2e": Dist.of(e2e)}
    lags = np.array(
        [r.start_ns - r.scheduled_ns for r in records if r.scheduled_ns is not None], dtype=float
    )
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.input_tokens for r in ok)

    def rate(n: int) -> float:
        return n / duration_s if duration_s > 0 else 0.0

    goodput, attainment, met = _slo(ok, slo_ms or {}, dists, duration_s)
    return Summary(
        mode=point.mode,
        value=point.value,
        requests=len(records),
        completed=len(ok),
        failed=len(records) - len(ok),
        duration_s=duration_s,
        request_throughput_rps=rate(len(ok)),
        output_throughput_tok_s=rate(out_tokens),
        total_throughput_tok_s=rate(out_tokens + in_tokens),
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        tokens_source=_tokens_source(ok),
        ttft_ms=dists["ttft"],
        tpot_ms=dists["tpot"],
        itl_ms=Dist.of(_pooled_itl_ms(ok)),
        e2e_ms=dists["e2e"],
        send_lag_ms=Dist.of(lags / NS_PER_MS),
        max_in_flight=max_in_flight(records),
        errors_by_kind=dict(Counter(r.error for r in records if r.error is not None)),
        goodput_rps=goodput,
        slo_attainment=attainment,
        slo_met=met,
    )
