"""The gateway's ``shipit_*`` metrics in one per-app ``CollectorRegistry`` (no global state).

Owns every metric the gateway exports and their names (Prometheus style: ``_seconds``,
``_total``, histograms): requests by deployment/status/policy, TTFT/TPOT/E2E, queue wait,
retries, routing decisions by reason, admission refusals, and, read from the router services
at scrape time, queue depth, in-flight per replica, replica state and ejections. Hot-path
label children are cached so one request costs a few dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipit.services.router import RouterService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class _RouterCollector(Collector):
    def __init__(self, routers: Mapping[str, RouterService]) -> None:
        self.routers = routers

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "shipit_queue_depth", "Requests waiting at the gateway", labels=["deployment"]
        )
        in_flight = GaugeMetricFamily(
            "shipit_replica_in_flight",
            "Requests the gateway has on each replica",
            labels=["deployment", "replica"],
        )
        state = GaugeMetricFamily(
            "shipit_replica_state",
            "1 for each replica's current state",
            labels=["deployment", "replica", "state"],
        )
        ejections = CounterMetricFamily(
            "shipit_outlier_ejections",
            "Passive outlier ejections",
            labels=["deployment", "replica"],
        )
        for name, router in self.routers.items():
            depth.add_metric([name], len(router.queue))
            per_replica: dict[str, int] = {}
            for e in router.ejections:
                per_replica[e.replica_id] = per_replica.get(e.replica_id, 0) + 1
            for r in router.replicas.values():
                in_flight.add_metric([name, r.replica_id], r.in_flight)
                state.add_metric([name, r.replica_id, r.state.value], 1)
                ejections.add_metric([name, r.replica_id], per_replica.get(r.replica_id, 0))
        yield from (depth, in_flight, state, ejections)


class GatewayMetrics:
    def __init__(self, routers: Mapping[str, RouterService]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "shipit_requests",
            "Requests answered, by deployment, HTTP status and routing policy",
            ["deployment", "status", "policy"],
            registry=r,
        )
        self.ttft = Histogram(
            "shipit_time_to_first_token_seconds",
            "Request received -> first content chunk sent (streams)",
            ["deployment"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            "shipit_time_per_output_token_seconds",
            "(E2E - TTFT) / (chunks - 1) per streamed request",
            ["deployment"],
            buckets=TPOT_BUCKETS_S,
            registry=r,
        )
        self.e2e = Histogram(
            "shipit_e2e_request_latency_seconds",
            "Request received -> last byte sent",
            ["deployment"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "shipit_queue_wait_seconds",
            "Time spent waiting for a replica slot",
            ["deployment"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.retries = Counter(
            "shipit_retries", "Retries on another replica", ["deployment", "reason"], registry=r
        )
        self.decisions = Counter(
            "shipit_routing_decisions",
            "Routing decisions by policy and reason",
            ["deployment", "policy", "reason"],
            registry=r,
        )
        self.rejections = Counter(
            "shipit_admission_rejections",
            "Requests refused at admission (429/504)",
            ["deployment", "reason"],
            registry=r,
        )
        self.midstream_errors = Counter(
            "shipit_midstream_errors",
            "Streams ended with an SSE error event after the upstream failed",
            ["deployment"],
            registry=r,
        )
        r.register(_RouterCollector(routers))
        self._children: dict[tuple[str, ...], object] = {}

    def request_done(self, deployment: str, status: int, policy: str) -> None:
        key = ("req", deployment, str(status), policy)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(deployment, str(status), policy)
        child.inc()  # type: ignore[attr-defined]

    def decision(self, deployment: str, policy: str, reason: str) -> None:
        key = ("dec", deployment, policy, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(deployment, policy, reason)
        child.inc()  # type: ignore[attr-defined]

    def latency(self, deployment: str) -> tuple[Histogram, Histogram, Histogram, Histogram]:
        """The (ttft, tpot, e2e, queue_wait) children of a deployment."""
        key = ("lat", deployment)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.ttft.labels(deployment),
                self.tpot.labels(deployment),
                self.e2e.labels(deployment),
                self.queue_wait.labels(deployment),
            )
        return child  # type: ignore[return-value]

    def render(self) -> bytes:
        return generate_latest(self.registry)
