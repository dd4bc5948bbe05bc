"""Prometheus metrics of one replica, with vLLM's names, in a per-app registry.

Built from the telemetry catalog (``telemetry.catalog``'s replica group: vLLM's names, help,
buckets and the ``model_name`` label), so one dashboard and one autoscaler read the embedded
engine and vLLM alike; this module names no metric itself. Engine-wide figures (queue
lengths, KV usage, prefix-cache and token counters, LoRA adapters) are read from an
``EngineStats`` snapshot at scrape time; request latencies are observed per request by
``RequestTimer``; the process's CPU and RSS (``shipit_process_*{component="replica"}``) at
scrape time. No global registry: every app builds its own ``ReplicaMetrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shipit.engine.engine import EngineStats
from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import build_replica_metrics, snapshot_family
from shipit.telemetry.process import ProcessCollector

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
        label = (self.model_name,)
        for spec, value in (
            (cat.VLLM_RUNNING, s.num_running),
            (cat.VLLM_WAITING, s.num_waiting),
            (cat.VLLM_KV_USAGE, s.kv_cache_usage_perc),
            (cat.VLLM_PREFIX_QUERIES, s.prefix_cache_queries),
            (cat.VLLM_PREFIX_HITS, s.prefix_cache_hits),
            (cat.VLLM_PREEMPTIONS, s.num_preemptions),
            (cat.VLLM_PROMPT_TOKENS, s.prompt_tokens),
            (cat.VLLM_GENERATION_TOKENS, s.generation_tokens),
        ):
            yield snapshot_family(spec, [(label, float(value))])
        loras = (
            self.model_name,
            str(self.max_loras),
            ",".join(s.running_loras),
            ",".join(s.waiting_loras),
        )
        yield snapshot_family(cat.VLLM_LORA_INFO, [(loras, time.time())])
        cache = (self.model_name, str(s.block_size), str(s.num_blocks))
        yield snapshot_family(cat.VLLM_CACHE_CONFIG, [(cache, 1.0)])


class ReplicaMetrics:
    def __init__(self, model_name: str, *, max_loras: int, process: bool = True) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=False)
        self._engine = _EngineCollector(model_name, max_loras)
        self.registry.register(self._engine)
        m = build_replica_metrics(self.registry)
        self.ttft_s = m.ttft.labels(model_name)
        self.itl_s = m.itl.labels(model_name)
        self.e2e_s = m.e2e.labels(model_name)
        self._success = m.request_success
        self._errors = m.errors
        if process:
            self.registry.register(ProcessCollector("replica"))

    def render(self, stats: EngineStats | None) -> bytes:
        self._engine.snapshot = stats
        return generate_latest(self.registry)

    def finished(self, reason: str) -> None:
        self._success.labels(self.model_name, reason).inc()

    def error(self, status: int, code: str) -> None:
        """One error response sent (4xx/5xx), whatever path produced it."""
        self._errors.labels(self.model_name, str(status), code).inc()

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
