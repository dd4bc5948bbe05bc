"""The gateway's metrics, built from the telemetry catalog into one per-app registry.

Owns the gateway's view of ``telemetry.catalog``: the per-request collectors
(``telemetry.instruments.build_gateway_metrics``), cost and baseline-alert gauges, and the
scrape-time collectors: queue depth, in-flight, replica state and ejections read from the router
services, this process's CPU and RSS, and NVML accelerator figures when a GPU is visible. Hot-path
label children are cached per deployment so one request costs a few attribute lookups, and the
per-request series are plain numbers (``telemetry.plain``) exposed as prometheus_client's. It
must not name a metric itself (the catalog does) nor touch the global default registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shipit.services.router import RouterService
from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import (
    AlertMetrics,
    CostMetrics,
    build_alert_metrics,
    build_cost_metrics,
    build_gateway_metrics,
    snapshot_family,
)
from shipit.telemetry.plain import CounterChild, HistogramChild
from shipit.telemetry.process import ProcessCollector, nvml_collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _RouterCollector(Collector):
    def __init__(self, routers: Mapping[str, RouterService]) -> None:
        self.routers = routers

    def collect(self) -> Iterator[Metric]:
        depth: list[tuple[tuple[str, ...], float]] = []
        in_flight: list[tuple[tuple[str, ...], float]] = []
        state: list[tuple[tuple[str, ...], float]] = []
        ejections: list[tuple[tuple[str, ...], float]] = []
        for name, router in self.routers.items():
            depth.append(((name,), router.queued()))
            per_replica: dict[str, int] = {}
            for e in router.ejections:
                per_replica[e.replica_id] = per_replica.get(e.replica_id, 0) + 1
            for r in router.registry.records():
                in_flight.append(((name, r.replica_id), r.in_flight))
                state.append(((name, r.replica_id, r.state.value), 1))
                ejections.append(((name, r.replica_id), per_replica.get(r.replica_id, 0)))
        yield snapshot_family(cat.QUEUE_DEPTH, depth)
        yield snapshot_family(cat.REPLICA_IN_FLIGHT, in_flight)
        yield snapshot_family(cat.REPLICA_STATE, state)
        yield snapshot_family(cat.EJECTIONS, ejections)


@dataclass(frozen=True, slots=True)
class RequestChildren:
    """One deployment's per-request label children (plain histogram and counter children)."""

    ttft: HistogramChild
    tpot: HistogramChild
    itl: HistogramChild
    e2e: HistogramChild
    queue_wait: HistogramChild
    prompt_tokens: CounterChild
    output_tokens: CounterChild
    slo_met: CounterChild


class GatewayMetrics:
    """Every series the gateway exports. ``process``/``nvml`` are off in tests that want a
    deterministic exposition."""

    def __init__(
        self,
        routers: Mapping[str, RouterService],
        *,
        process: bool = True,
        nvml: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        m = build_gateway_metrics(self.registry)
        self.catalog = m
        self.requests = m.requests
        self.ttft, self.tpot, self.itl, self.e2e = m.ttft, m.tpot, m.itl, m.e2e
        self.queue_wait = m.queue_wait
        self.retries = m.retries
        self.decisions = m.routing_decisions
        self.rejections = m.admission_rejections
        self.midstream_errors = m.midstream_errors
        self.cost: CostMetrics = build_cost_metrics(self.registry)
        self.alerts: AlertMetrics = build_alert_metrics(self.registry)
        self.registry.register(_RouterCollector(routers))
        if process:
            self.registry.register(ProcessCollector("gateway"))
        gpus = nvml_collector() if nvml else None
        if gpus is not None:
            self.registry.register(gpus)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        self._per_request: dict[str, RequestChildren] = {}
        self._prefix: dict[
            tuple[str, str, str], tuple[CounterChild, CounterChild, CounterChild, CounterChild]
        ] = {}

    def request_done(self, deployment: str, status: int, policy: str) -> None:
        key = ("req", deployment, str(status), policy)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(deployment, str(status), policy)
        child.value += 1

    def decision(self, deployment: str, policy: str, reason: str) -> None:
        key = ("dec", deployment, policy, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(deployment, policy, reason)
        child.value += 1

    def prefix_check(self, deployment: str, hashing: str, predicted: int, reported: int) -> None:
        """One answer's cached prefix: ``predicted`` blocks (the index, at routing time) vs
        ``reported`` (the replica's cached tokens / block size)."""
        outcome = "exact" if predicted == reported else "over" if predicted > reported else "under"
        key = (deployment, hashing, outcome)
        children = self._prefix.get(key)
        if children is None:
            m = self.catalog
            children = self._prefix[key] = (
                m.prefix_predictions.labels(deployment, hashing, outcome),
                m.prefix_blocks.labels(deployment, hashing, "predicted"),
                m.prefix_blocks.labels(deployment, hashing, "reported"),
                m.prefix_mispredicted.labels(deployment, hashing),
            )
        answers, predicted_blocks, reported_blocks, mispredicted = children
        answers.inc()
        predicted_blocks.inc(predicted)
        reported_blocks.inc(reported)
        mispredicted.inc(abs(predicted - reported))

    def per_request(self, deployment: str) -> RequestChildren:
        """The label children of ``deployment`` (created once, then a dict lookup)."""
        got = self._per_request.get(deployment)
        if got is None:
            m = self.catalog
            got = self._per_request[deployment] = RequestChildren(
                ttft=m.ttft.labels(deployment),
                tpot=m.tpot.labels(deployment),
                itl=m.itl.labels(deployment),
                e2e=m.e2e.labels(deployment),
                queue_wait=m.queue_wait.labels(deployment),
                prompt_tokens=m.prompt_tokens.labels(deployment),
                output_tokens=m.output_tokens.labels(deployment),
                slo_met=m.requests_slo_met.labels(deployment),
            )
        return got

    def render(self) -> bytes:
        return generate_latest(self.registry)
