"""The baseline-alert loop on a fake clock: a TTFT regression fires, reaches the webhook and
Alertmanager, shows in ``active()`` and ``shipit_alert_active``, then clears; cost gauges."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.config.observability import AlertsConfig
from shipit.services.alert_sinks import AlertChange, AlertmanagerSink, WebhookSink, iso_utc
from shipit.services.alerts import AlertService, CostInputs, observable
from shipit.services.cost import replica_usd_per_hour, usd_per_million_tokens
from shipit.telemetry.instruments import (
    build_alert_metrics,
    build_cost_metrics,
    build_gateway_metrics,
)
from shipit.telemetry.window import WindowStats

T0 = 1_700_000_000.0  # Unix seconds: the detector's hour-of-day needs wall time
TICK_S = 60.0


class FakePoster:
    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, Any]] = []
        self.status = status

    async def post_json(self, url: str, payload: object, *, timeout_s: float) -> tuple[int, bytes]:
        self.posts.append((url, payload))
        return self.status, b"{}"


class Harness:
    def __init__(self, poster: FakePoster, **cost: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.gw = build_gateway_metrics(self.registry)
        self.alert_metrics = build_alert_metrics(self.registry)
        self.rng = random.Random(7)
        sinks = [
            WebhookSink(poster, "http://hook/x", timeout_s=1),
            AlertmanagerSink(poster, "http://am:9093/", timeout_s=1, resend_s=TICK_S),
        ]
        self.service = AlertService(
            config=AlertsConfig(sample_interval_s=TICK_S),
            read=lambda: (s for fam in self.registry.collect() for s in fam.samples),
            metrics=self.alert_metrics,
            sinks=sinks,
            **cost,
        )
        self.now_s = T0

    def traffic(self, ttft_s: float, n: int = 20) -> None:
        for _ in range(n):
            self.gw.requests.labels("chat", "200", "p").inc()
            self.gw.ttft.labels("chat").observe(ttft_s * self.rng.uniform(0.8, 1.2))
            self.gw.output_tokens.labels("chat").inc(50)

    def tick(self) -> list[str]:
        self.now_s += TICK_S
        changes = self.service.tick(self.now_s)
        asyncio.run(self.service.deliver(changes, self.now_s))
        return [f"{c.status}:{c.alert['metric']}" for c in changes]

    def gauge(self, metric: str) -> float:
        child = self.alert_metrics.alert_active.labels("chat", metric, "baseline_deviation")
        return float(child._value.get())


def test_a_ttft_regression_fires_is_delivered_and_clears() -> None:
    poster = FakePoster()
    h = Harness(poster)
    h.tick()  # first reading: nothing to compare with
    for _ in range(120):  # two normal hours
        h.traffic(0.2)
        assert h.tick() == []
    assert h.service.active() == [] and poster.posts == []
    fired_after = None
    for i in range(40):
        h.traffic(1.0)
        if "firing:ttft_p99_s" in h.tick():
            fired_after = i + 1
            break
    assert fired_after is not None and 10 <= fired_after <= 25  # held >= 10 min, then fires
    assert h.gauge("ttft_p99_s") == 1.0
    active = h.service.active()
    assert {a["metric"] for a in active} >= {"ttft_p99_s"}
    assert all(a["alert"] == "ShipitBaselineDeviation" for a in active)
    hook = [p for url, p in poster.posts if url == "http://hook/x"]
    assert hook[-1]["changes"][0]["status"] == "firing"
    assert "above its" in hook[-1]["changes"][0]["reason"]
    am = [p for url, p in poster.posts if url == "http://am:9093/api/v2/alerts"]
    labels = am[-1][0]["labels"]
    assert labels["alertname"] == "ShipitBaselineDeviation" and labels["deployment"] == "chat"
    assert am[-1][0]["endsAt"] > am[-1][0]["startsAt"]
    resolved = []
    for _ in range(90):
        h.traffic(0.2)
        resolved += [c for c in h.tick() if c == "resolved:ttft_p99_s"]
        if resolved:
            break
    assert resolved and h.gauge("ttft_p99_s") == 0.0
    assert all(a["metric"] != "ttft_p99_s" for a in h.service.active())
    hook = [p for url, p in poster.posts if url == "http://hook/x"]
    assert [c["status"] for c in hook[-1]["changes"]] == ["resolved"]
    last_am = [p for url, p in poster.posts if url.endswith("/api/v2/alerts")][-1]
    ended = [a for a in last_am if a["labels"]["metric"] == "ttft_p99_s"]
    assert [a["endsAt"] for a in ended] == [iso_utc(h.now_s)]  # resolved: ends now


def test_quiet_windows_do_not_feed_latency_or_errors() -> None:
    stats = WindowStats(
        seconds=10.0,
        requests_per_s=0.2,
        error_ratio=0.5,
        goodput_ratio=0.5,
        output_tokens_per_s=1.0,
        prompt_tokens_per_s=1.0,
        ttft_p99_s=3.0,
        e2e_p99_s=4.0,
        latency_samples=2,
    )
    assert observable(stats, min_requests=5) == {"requests_per_s": 0.2}
    assert set(observable(stats, min_requests=2)) == {
        "requests_per_s",
        "error_ratio",
        "e2e_p99_s",
        "ttft_p99_s",
    }


def test_a_failing_sink_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(FakePoster(status=500))
    change = AlertChange("firing", {"deployment": "chat", "metric": "m", "since_s": T0,
                                    "reason": "r"})  # fmt: skip
    asyncio.run(h.service.deliver([change], T0))
    assert "alert delivery via WebhookSink failed" in caplog.text


def test_cost_gauges_from_price_data_and_throughput() -> None:
    price = replica_usd_per_hour("H100:llama-3.1-8b")
    assert price > 0
    assert replica_usd_per_hour("H100:llama-3.1-70b:tp4") == pytest.approx(4 * price)
    assert replica_usd_per_hour(None) == 0.0 and replica_usd_per_hour("nope:x") == 0.0
    registry = CollectorRegistry(auto_describe=False)
    cost = build_cost_metrics(registry)
    inputs = CostInputs({"chat": price}, lambda: {"chat": ["ready", "starting", "stopped"]})
    h = Harness(FakePoster(), cost=(cost, inputs))
    h.tick()
    h.traffic(0.2, n=36)  # 36 x 50 tokens in 60 s = 30 tokens/s
    h.tick()
    per_hour = cost.cost_per_hour_usd.labels("chat")._value.get()
    assert per_hour == pytest.approx(2 * price)  # the stopped replica costs nothing
    per_mtok = cost.cost_per_million_tokens_usd.labels("chat")._value.get()
    assert per_mtok == pytest.approx(usd_per_million_tokens(2 * price, 30.0))
    assert usd_per_million_tokens(1.0, 0.0) is None
