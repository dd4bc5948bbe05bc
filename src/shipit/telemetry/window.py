"""Rates and percentiles over a window, from two readings of the gateway's cumulative series.

Owns turning Prometheus samples (``prometheus_client`` ``Sample``s, from a registry's
``collect()`` or from ``prometheus_client.parser`` on scraped text) into per-deployment
cumulative readings (``DeploymentReading``), and two readings into ``WindowStats``: req/s, error
ratio, goodput ratio, tokens/s and TTFT/TPOT/E2E percentiles interpolated inside histogram buckets
the way PromQL's ``histogram_quantile`` does. Both the baseline-alert loop and ``shipit top``
use it, so they agree with each other and with the dashboards. Pure: no clock, no IO; a counter
that went backwards (a restart) makes the window start from zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.samples import Sample

from shipit.telemetry import catalog as cat

Buckets = tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), +Inf last


@dataclass(frozen=True, slots=True)
class DeploymentReading:
    """Cumulative totals of one deployment at one scrape."""

    requests: float = 0.0  # valid requests: everything except 4xx other than 429
    errors: float = 0.0  # 5xx and 429
    slo_met: float = 0.0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0
    ttft: Buckets = ()
    tpot: Buckets = ()
    e2e: Buckets = ()


@dataclass(frozen=True, slots=True)
class WindowStats:
    seconds: float
    requests_per_s: float
    error_ratio: float | None  # None: no requests in the window
    goodput_ratio: float | None
    output_tokens_per_s: float
    prompt_tokens_per_s: float
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p99_s: float | None = None
    e2e_p99_s: float | None = None
    latency_samples: int = 0  # streamed requests with a TTFT in the window


@dataclass(slots=True)
class _Builder:
    counts: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)

    def reading(self) -> DeploymentReading:
        def b(name: str) -> Buckets:
            return tuple(sorted(self.buckets.get(name, {}).items()))

        c = self.counts
        return DeploymentReading(
            requests=c.get("requests", 0.0),
            errors=c.get("errors", 0.0),
            slo_met=c.get(cat.GOOD_REQUESTS.name, 0.0),
            prompt_tokens=c.get(cat.PROMPT_TOKENS.name, 0.0),
            output_tokens=c.get(cat.OUTPUT_TOKENS.name, 0.0),
            ttft=b(cat.TTFT.name),
            tpot=b(cat.TPOT.name),
            e2e=b(cat.E2E.name),
        )


_COUNTERS = {cat.GOOD_REQUESTS.name, cat.PROMPT_TOKENS.name, cat.OUTPUT_TOKENS.name}
_HISTOGRAMS = {cat.TTFT.name + "_bucket", cat.TPOT.name + "_bucket", cat.E2E.name + "_bucket"}


def is_error_status(status: str) -> bool:
    return status.startswith("5") or status == "429"


def is_valid_status(status: str) -> bool:
    return not status.startswith("4") or status == "429"


def readings(samples: Iterable[Sample]) -> dict[str, DeploymentReading]:
    """Per-deployment cumulative readings from every sample of a scrape (others ignored)."""
    by_dep: dict[str, _Builder] = {}
    for s in samples:
        dep = s.labels.get("deployment")
        if dep is None:
            continue
        if s.name == cat.REQUESTS.name:
            b = by_dep.setdefault(dep, _Builder())
            status = s.labels.get("status", "")
            if is_valid_status(status):
                b.counts["requests"] = b.counts.get("requests", 0.0) + s.value
            if is_error_status(status):
                b.counts["errors"] = b.counts.get("errors", 0.0) + s.value
        elif s.name in _COUNTERS:
            b = by_dep.setdefault(dep, _Builder())
            b.counts[s.name] = b.counts.get(s.name, 0.0) + s.value
        elif s.name in _HISTOGRAMS:
            le = float(s.labels["le"])
            per = by_dep.setdefault(dep, _Builder()).buckets.setdefault(s.name[:-7], {})
            per[le] = per.get(le, 0.0) + s.value
    return {dep: b.reading() for dep, b in by_dep.items()}


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new  # reset: the process restarted


def bucket_delta(older: Buckets, newer: Buckets) -> Buckets:
    before = dict(older)
    if any(count < before.get(le, 0.0) for le, count in newer):
        return newer  # reset
    return tuple((le, count - before.get(le, 0.0)) for le, count in newer)


def quantile(q: float, buckets: Buckets) -> float | None:
    """PromQL's ``histogram_quantile``: linear inside the bucket, the highest finite bound when
    the rank falls in +Inf, lower bound 0 for the first bucket; ``None`` without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def window(
    older: DeploymentReading | None, newer: DeploymentReading, seconds: float
) -> WindowStats:
    """What happened between two readings ``seconds`` apart (``older`` None: since start)."""
    old = older or DeploymentReading()
    span = max(seconds, 1e-9)
    requests = _delta(newer.requests, old.requests)
    ttft = bucket_delta(old.ttft, newer.ttft)
    tpot = bucket_delta(old.tpot, newer.tpot)
    e2e = bucket_delta(old.e2e, newer.e2e)
    return WindowStats(
        seconds=seconds,
        requests_per_s=requests / span,
        error_ratio=_delta(newer.errors, old.errors) / requests if requests else None,
        goodput_ratio=_delta(newer.slo_met, old.slo_met) / requests if requests else None,
        output_tokens_per_s=_delta(newer.output_tokens, old.output_tokens) / span,
        prompt_tokens_per_s=_delta(newer.prompt_tokens, old.prompt_tokens) / span,
        ttft_p50_s=quantile(0.5, ttft),
        ttft_p99_s=quantile(0.99, ttft),
        tpot_p50_s=quantile(0.5, tpot),
        tpot_p99_s=quantile(0.99, tpot),
        e2e_p99_s=quantile(0.99, e2e),
        latency_samples=int(ttft[-1][1]) if ttft else 0,
    )
