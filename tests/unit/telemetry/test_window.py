"""Window figures from two readings of the gateway's series: rates, ratios, and quantiles that
agree with PromQL's ``histogram_quantile``."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from shipit.telemetry.instruments import build_gateway_metrics
from shipit.telemetry.window import DeploymentReading, quantile, readings, window


def collect(registry: CollectorRegistry) -> dict[str, DeploymentReading]:
    return readings(s for fam in registry.collect() for s in fam.samples)


def test_quantile_interpolates_like_promql() -> None:
    buckets = ((0.1, 10.0), (0.2, 20.0), (0.5, 20.0), (float("inf"), 20.0))
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.25, buckets) == pytest.approx(0.05)  # first bucket starts at 0
    assert quantile(0.5, ((0.1, 0.0), (float("inf"), 0.0))) is None
    assert quantile(0.99, ((0.1, 1.0), (float("inf"), 5.0))) == 0.1  # rank in +Inf


def test_readings_and_window_from_a_registry() -> None:
    reg = CollectorRegistry(auto_describe=False)
    m = build_gateway_metrics(reg)
    first = collect(reg)
    assert first == {}
    for status, n in (("200", 8), ("500", 1), ("429", 1), ("400", 3)):
        m.requests.labels("chat", status, "p").inc(n)
    for _ in range(10):
        m.ttft.labels("chat").observe(0.15)
    m.output_tokens.labels("chat").inc(200)
    m.requests_slo_met.labels("chat").inc(6)
    second = collect(reg)["chat"]
    assert second.requests == 10 and second.errors == 2  # 400s are not valid requests
    stats = window(None, second, 10.0)
    assert stats.requests_per_s == 1.0
    assert stats.error_ratio == pytest.approx(0.2) and stats.goodput_ratio == pytest.approx(0.6)
    assert stats.output_tokens_per_s == 20.0
    assert stats.latency_samples == 10
    assert stats.ttft_p50_s is not None and 0.1 < stats.ttft_p50_s <= 0.15
    for _ in range(10):
        m.ttft.labels("chat").observe(2.5)
    third = collect(reg)["chat"]
    later = window(second, third, 5.0)
    assert later.requests_per_s == 0.0 and later.error_ratio is None
    assert later.ttft_p50_s is not None and 2.0 < later.ttft_p50_s <= 3.0  # only the new ones


def test_a_counter_reset_starts_the_window_from_zero() -> None:
    old = DeploymentReading(
        requests=100, output_tokens=1000, ttft=((1.0, 50.0), (float("inf"), 60.0))
    )
    new = DeploymentReading(requests=4, output_tokens=40, ttft=((1.0, 2.0), (float("inf"), 2.0)))
    stats = window(old, new, 2.0)
    assert stats.requests_per_s == 2.0 and stats.output_tokens_per_s == 20.0
    assert stats.latency_samples == 2
