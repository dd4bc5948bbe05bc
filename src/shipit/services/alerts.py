"""The live baseline-deviation loop: sample the gateway's own series, learn, alert, deliver.

Owns, every ``alerts.sample_interval_s``: reading the gateway's registry (through a callable,
so it never imports the gateway), turning two successive readings into per-deployment window
figures (``telemetry.window``: TTFT P50/P99, TPOT P99, E2E P99, error ratio, req/s), feeding
them to ``telemetry.baseline.DeviationMonitor``, publishing ``shipit_alert_active`` and
``shipit_baseline_deviation_score`` (``publish_deviation``) and the cost gauges, keeping the
active alerts for ``/shipit/status``, and sending changes to the configured sinks (a webhook,
Alertmanager's ``/api/v2/alerts``). ``tick(now_s)`` is synchronous and takes wall-clock Unix
seconds (hour-of-day baselines need them), so tests drive it with a fake clock; ``run`` is the
only part that sleeps. It must not decide what is anomalous (the detector does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.samples import Sample

from shipit.config.observability import AlertsConfig
from shipit.services.alert_sinks import AlertChange, AlertSink, alert_record
from shipit.services.cost import deployment_usd_per_hour, usd_per_million_tokens
from shipit.telemetry.baseline import (
    BaselineConfig,
    BaselineDecision,
    DeviationMonitor,
    error_rate_config,
    latency_config,
    throughput_config,
)
from shipit.telemetry.instruments import AlertMetrics, CostMetrics, publish_deviation
from shipit.telemetry.window import DeploymentReading, WindowStats, readings, window

log = logging.getLogger("shipit.alerts")

LATENCY_METRICS = ("ttft_p50_s", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s")


def default_baselines() -> dict[str, BaselineConfig]:
    """The metrics watched per deployment and how each is judged."""
    configs = {name: latency_config() for name in LATENCY_METRICS}
    configs["error_ratio"] = error_rate_config()
    configs["requests_per_s"] = throughput_config()
    return configs


def observable(stats: WindowStats, min_requests: int) -> dict[str, float]:
    """The figures of one window that have enough requests behind them to mean something."""
    values: dict[str, float] = {"requests_per_s": stats.requests_per_s}
    enough = stats.requests_per_s * stats.seconds >= min_requests
    if enough and stats.error_ratio is not None:
        values["error_ratio"] = stats.error_ratio
    if enough and stats.e2e_p99_s is not None:
        values["e2e_p99_s"] = stats.e2e_p99_s
    if stats.latency_samples >= min_requests:
        for name in ("ttft_p50_s", "ttft_p99_s", "tpot_p99_s"):
            value = getattr(stats, name)
            if value is not None:
                values[name] = value
    return values


@dataclass(frozen=True, slots=True)
class CostInputs:
    """Price of one replica-hour per deployment and a reader of replica states."""

    usd_per_replica_hour: Mapping[str, float]
    replica_states: Callable[[], Mapping[str, Sequence[str]]]


class AlertService:
    def __init__(
        self,
        *,
        config: AlertsConfig,
        read: Callable[[], Iterable[Sample]],
        metrics: AlertMetrics,
        sinks: Sequence[AlertSink] = (),
        cost: tuple[CostMetrics, CostInputs] | None = None,
        monitor: DeviationMonitor | None = None,
    ) -> None:
        self.config = config
        self._read = read
        self._metrics = metrics
        self._sinks = list(sinks)
        self._cost = cost
        self.monitor = monitor or DeviationMonitor(default_baselines())
        self._previous: dict[str, DeploymentReading] = {}
        self._previous_at_s: float | None = None
        self._since_s: dict[tuple[str, str], float] = {}
        self.latest: dict[str, WindowStats] = {}

    def tick(self, now_s: float) -> list[AlertChange]:
        """Sample once; returns the alerts that fired or cleared at this tick."""
        current = readings(self._read())
        span_s = now_s - self._previous_at_s if self._previous_at_s is not None else None
        changes: list[AlertChange] = []
        for dep, reading in current.items():
            if span_s is None or span_s <= 0:
                continue
            stats = self.latest[dep] = window(self._previous.get(dep), reading, span_s)
            for metric, value in observable(stats, self.config.min_requests_per_sample).items():
                d = self.monitor.observe(deployment=dep, metric=metric, now_s=now_s, value=value)
                publish_deviation(
                    self._metrics, deployment=dep, metric=metric, score=d.score, active=d.active
                )
                change = self._transition(dep, metric, d)
                if change is not None:
                    changes.append(change)
        self._previous, self._previous_at_s = current, now_s
        self._publish_cost()
        return changes

    def _transition(self, dep: str, metric: str, d: BaselineDecision) -> AlertChange | None:
        key = (dep, metric)
        if d.fired:
            self._since_s[key] = d.at_s
            return AlertChange("firing", alert_record(dep, metric, d, since_s=d.at_s))
        if d.cleared:
            since = self._since_s.pop(key, d.at_s)
            return AlertChange("resolved", alert_record(dep, metric, d, since_s=since))
        return None

    def _publish_cost(self) -> None:
        if self._cost is None:
            return
        gauges, inputs = self._cost
        states = inputs.replica_states()
        for dep, price in inputs.usd_per_replica_hour.items():
            per_hour = deployment_usd_per_hour(price, states.get(dep, ()))
            gauges.cost_per_hour_usd.labels(deployment=dep).set(per_hour)
            stats = self.latest.get(dep)
            per_mtok = usd_per_million_tokens(per_hour, stats.output_tokens_per_s if stats else 0)
            if per_mtok is not None:
                gauges.cost_per_million_tokens_usd.labels(deployment=dep).set(per_mtok)

    def active(self) -> list[dict[str, Any]]:
        """Raised alerts, for ``/shipit/status`` (JSON-ready, oldest first)."""
        out = [
            alert_record(dep, metric, d, since_s=self._since_s.get((dep, metric), d.at_s))
            for (dep, metric), d in self.monitor.active().items()
        ]
        return sorted(out, key=lambda a: (a["since_s"], a["deployment"], a["metric"]))

    async def deliver(self, changes: list[AlertChange], now_s: float) -> None:
        """Hand changes (and the still-active set) to every sink; a sink's failure is logged."""
        active = self.active()
        for sink in self._sinks:
            try:
                await sink.send(changes, active, now_s=now_s)
            except Exception as exc:  # delivery must never stop the loop
                log.warning("alert delivery via %s failed: %s", type(sink).__name__, exc)

    async def run(self, wall: Callable[[], float] = time.time) -> None:
        """Tick every ``sample_interval_s`` until cancelled."""
        self.tick(wall())
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            now_s = wall()
            try:
                changes = self.tick(now_s)
            except Exception:
                log.exception("alert sampling failed")
                continue
            await self.deliver(changes, now_s)
