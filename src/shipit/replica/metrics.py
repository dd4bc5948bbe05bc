"""Prometheus metrics of one replica, with vLLM's names, in a per-app registry.

Owns the metric definitions (names, help, buckets, the ``model_name`` label) so one dashboard
and one autoscaler read the embedded engine and vLLM alike. Engine-wide figures (queue
lengths, KV usage, prefix-cache and token counters, LoRA adapters) are read from an
``EngineStats`` snapshot at scrape time; request latencies are observed per request by
``RequestTimer``. No global registry: every app builds its own ``ReplicaMetrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipit.engine.engine import EngineStats

# vLLM's buckets, so histograms from both engines aggregate.
TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector(Collector):
    """Yields the engine's gauges and counters from the latest snapshot."""

    def __init__(self, model_name: str, max_loras: int) -> None:
        self.model_name = model_name
        self.max_loras = max_loras
        self.snapshot: EngineStats | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        label = [self.model_name]
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests in model execution batches.", s.num_running),
            ("vllm:num_requests_waiting", "Requests waiting to be processed.", s.num_waiting),
            (
                "vllm:kv_cache_usage_perc",
                "KV-cache usage; 1 means 100 percent.",
                s.kv_cache_usage_perc,
            ),
        ):
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            g.add_metric(label, value)
            yield g
        for name, doc, value in (
            (
                "vllm:prefix_cache_queries",
                "Prefix-cache queries, in tokens.",
                s.prefix_cache_queries,
            ),
            ("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.", s.prefix_cache_hits),
            ("vllm:num_preemptions", "Cumulative number of preemptions.", s.num_preemptions),
            ("vllm:prompt_tokens", "Prefill tokens processed.", s.prompt_tokens),
            ("vllm:generation_tokens", "Generation tokens processed.", s.generation_tokens),
        ):
            c = CounterMetricFamily(name, doc, labels=["model_name"])
            c.add_metric(label, value)
            yield c
        info = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "Running and waiting LoRA adapters; the value is the scrape time.",
            labels=["model_name", "max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        info.add_metric(
            [
                self.model_name,
                str(self.max_loras),
                ",".join(s.running_loras),
                ",".join(s.waiting_loras),
            ],
            time.time(),
        )
        yield info


class ReplicaMetrics:
    def __init__(self, model_name: str, *, max_loras: int) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=False)
        self._engine = _EngineCollector(model_name, max_loras)
        self.registry.register(self._engine)
        labels = ["model_name"]
        self.ttft_s = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token, in seconds.",
            labels,
            buckets=TTFT_BUCKETS_S,
            registry=self.registry,
        ).labels(model_name)
        self.itl_s = Histogram(
            "vllm:inter_token_latency_seconds",
            "Time between output tokens, in seconds.",
            labels,
            buckets=ITL_BUCKETS_S,
            registry=self.registry,
        ).labels(model_name)
        self.e2e_s = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency, in seconds.",
            labels,
            buckets=E2E_BUCKETS_S,
            registry=self.registry,
        ).labels(model_name)
        self._success = Counter(
            "vllm:request_success",
            "Finished requests, by finish reason.",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )

    def render(self, stats: EngineStats | None) -> bytes:
        self._engine.snapshot = stats
        return generate_latest(self.registry)

    def finished(self, reason: str) -> None:
        self._success.labels(self.model_name, reason).inc()

    def timer(self) -> RequestTimer:
        return RequestTimer(self)


class RequestTimer:
    """Latency of one request: TTFT at the first output, a gap per later token, E2E."""

    __slots__ = ("_last_s", "_metrics", "_start_s")

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self._metrics = metrics
        self._start_s = time.perf_counter()
        self._last_s: float | None = None

    def tokens(self, count: int) -> None:
        now = time.perf_counter()
        if self._last_s is None:
            self._metrics.ttft_s.observe(now - self._start_s)
        elif count > 0:
            gap = (now - self._last_s) / count
            for _ in range(count):
                self._metrics.itl_s.observe(gap)
        self._last_s = now

    def done(self, reason: str | None) -> None:
        self._metrics.e2e_s.observe(time.perf_counter() - self._start_s)
        self._metrics.finished(reason or "abort")
