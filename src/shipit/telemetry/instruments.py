"""Real ``prometheus_client`` collectors built from the catalog, into a registry the caller owns.

Owns the translation from ``MetricSpec`` to ``Counter``/``Gauge``/``Histogram`` (and to metric
families for scrape-time collectors) and one typed holder per component, so a component writes
``metrics.ttft.labels(deployment="chat").observe(0.21)`` and never spells a metric name.
It must not touch the global default registry or create anything at import time: every
collector is built by a ``build_*`` call into the ``CollectorRegistry`` passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shipit.telemetry import catalog as cat
from shipit.telemetry.catalog import Component, MetricKind, MetricSpec, Update
from shipit.telemetry.plain import PlainCounter, PlainHistogram

Instrument = Counter | Gauge | Histogram


def _base_name(spec: MetricSpec) -> str:
    # prometheus_client appends ``_total`` to counters itself.
    return spec.name.removesuffix("_total") if spec.kind is MetricKind.COUNTER else spec.name


def build_instrument(spec: MetricSpec, registry: CollectorRegistry) -> Instrument:
    """One collector for an ``INSTRUMENT`` spec, registered in ``registry``."""
    if spec.update is not Update.INSTRUMENT:
        raise ValueError(
            f"{spec.name} is read at scrape time (update=snapshot); "
            "yield snapshot_family(spec, samples) from a custom collector instead"
        )
    name, labels = _base_name(spec), list(spec.labels)
    if spec.kind is MetricKind.COUNTER:
        return Counter(name, spec.help, labels, registry=registry)
    if spec.kind is MetricKind.GAUGE:
        return Gauge(name, spec.help, labels, registry=registry)
    return Histogram(name, spec.help, labels, buckets=spec.buckets_s, registry=registry)


def snapshot_family(spec: MetricSpec, samples: Iterable[tuple[Sequence[str], float]]) -> Metric:
    """A metric family for a ``SNAPSHOT`` spec: ``samples`` are (label values, value) pairs."""
    family: Metric
    if spec.kind is MetricKind.COUNTER:
        family = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    elif spec.kind is MetricKind.GAUGE:
        family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    else:
        raise ValueError(f"{spec.name}: histograms are observed per event, not snapshotted")
    for values, value in samples:
        if len(values) != len(spec.labels):
            raise ValueError(f"{spec.name}: expected labels {spec.labels}, got {tuple(values)}")
        family.add_metric(list(values), value)
    return family


class InstrumentSet:
    """Every ``INSTRUMENT`` metric of one component, looked up by spec with its type checked."""

    def __init__(self, component: Component, registry: CollectorRegistry) -> None:
        self.component = component
        self._by_name: dict[str, Instrument] = {
            s.name: build_instrument(s, registry)
            for s in cat.group(component)
            if s.update is Update.INSTRUMENT
        }

    def _get(self, spec: MetricSpec) -> Instrument:
        try:
            return self._by_name[spec.name]
        except KeyError:
            raise KeyError(f"{spec.name} is not an instrument of {self.component}") from None

    def counter(self, spec: MetricSpec) -> Counter:
        got = self._get(spec)
        if not isinstance(got, Counter):
            raise TypeError(f"{spec.name} is a {spec.kind}, not a counter")
        return got

    def gauge(self, spec: MetricSpec) -> Gauge:
        got = self._get(spec)
        if not isinstance(got, Gauge):
            raise TypeError(f"{spec.name} is a {spec.kind}, not a gauge")
        return got

    def histogram(self, spec: MetricSpec) -> Histogram:
        got = self._get(spec)
        if not isinstance(got, Histogram):
            raise TypeError(f"{spec.name} is a {spec.kind}, not a histogram")
        return got

    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)


def build_group(component: Component, registry: CollectorRegistry) -> InstrumentSet:
    """Collectors for every ``INSTRUMENT`` metric of ``component``, in ``registry``."""
    return InstrumentSet(component, registry)


class PlainSet:
    """Every ``INSTRUMENT`` metric of one component as plain counters and histograms
    (``telemetry.plain``: the same exposition, cheaper updates; event-loop thread only)."""

    def __init__(self, component: Component, registry: CollectorRegistry) -> None:
        self.component = component
        self._by_name: dict[str, PlainCounter | PlainHistogram] = {}
        for spec in cat.group(component):
            if spec.update is not Update.INSTRUMENT:
                continue
            name, labels = _base_name(spec), list(spec.labels)
            if spec.kind is MetricKind.COUNTER:
                self._by_name[spec.name] = PlainCounter(name, spec.help, labels, registry)
            elif spec.kind is MetricKind.HISTOGRAM:
                self._by_name[spec.name] = PlainHistogram(
                    name, spec.help, labels, registry, buckets=spec.buckets_s
                )
            else:
                raise ValueError(f"{spec.name}: a plain set holds counters and histograms only")

    def counter(self, spec: MetricSpec) -> PlainCounter:
        got = self._by_name.get(spec.name)
        if not isinstance(got, PlainCounter):
            raise KeyError(f"{spec.name} is not a counter of {self.component}")
        return got

    def histogram(self, spec: MetricSpec) -> PlainHistogram:
        got = self._by_name.get(spec.name)
        if not isinstance(got, PlainHistogram):
            raise KeyError(f"{spec.name} is not a histogram of {self.component}")
        return got


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """Per-request gateway metrics, plain (``telemetry.plain``: the gateway updates a dozen a
    request). Queue depth, in-flight, replica state and ejections are ``SNAPSHOT`` specs: the
    gateway's scrape-time collector yields them with ``snapshot_family`` from its router
    services."""

    requests: PlainCounter
    requests_slo_met: PlainCounter
    ttft: PlainHistogram
    tpot: PlainHistogram
    itl: PlainHistogram
    e2e: PlainHistogram
    prompt_tokens: PlainCounter
    output_tokens: PlainCounter
    queue_wait: PlainHistogram
    retries: PlainCounter
    routing_decisions: PlainCounter
    admission_rejections: PlainCounter
    midstream_errors: PlainCounter
    prefix_predictions: PlainCounter
    prefix_blocks: PlainCounter
    prefix_mispredicted: PlainCounter


def build_gateway_metrics(registry: CollectorRegistry) -> GatewayMetrics:
    s = PlainSet(Component.GATEWAY, registry)
    return GatewayMetrics(
        requests=s.counter(cat.REQUESTS),
        requests_slo_met=s.counter(cat.GOOD_REQUESTS),
        ttft=s.histogram(cat.TTFT),
        tpot=s.histogram(cat.TPOT),
        itl=s.histogram(cat.ITL),
        e2e=s.histogram(cat.E2E),
        prompt_tokens=s.counter(cat.PROMPT_TOKENS),
        output_tokens=s.counter(cat.OUTPUT_TOKENS),
        queue_wait=s.histogram(cat.QUEUE_WAIT),
        retries=s.counter(cat.RETRIES),
        routing_decisions=s.counter(cat.ROUTING_DECISIONS),
        admission_rejections=s.counter(cat.ADMISSION_REJECTIONS),
        midstream_errors=s.counter(cat.MIDSTREAM_ERRORS),
        prefix_predictions=s.counter(cat.PREFIX_PREDICTIONS),
        prefix_blocks=s.counter(cat.PREFIX_BLOCKS),
        prefix_mispredicted=s.counter(cat.PREFIX_MISPREDICTED),
    )


@dataclass(frozen=True, slots=True)
class ControlPlaneMetrics:
    replicas: Gauge
    replicas_desired: Gauge
    scale_events: Counter
    cold_start: Histogram
    cold_start_phase: Histogram
    requests_held: Gauge
    node_cordons: Counter
    spot_preemptions: Counter  # a live fleet plane's pools (services.spot_pools)
    pool_choices: Counter
    gpu_failures: Counter


def build_control_plane_metrics(registry: CollectorRegistry) -> ControlPlaneMetrics:
    s = build_group(Component.CONTROL_PLANE, registry)
    return ControlPlaneMetrics(
        replicas=s.gauge(cat.REPLICAS),
        replicas_desired=s.gauge(cat.REPLICAS_DESIRED),
        scale_events=s.counter(cat.SCALE_EVENTS),
        cold_start=s.histogram(cat.COLD_START),
        cold_start_phase=s.histogram(cat.COLD_START_PHASE),
        requests_held=s.gauge(cat.REQUESTS_HELD),
        node_cordons=s.counter(cat.NODE_CORDONS),
        spot_preemptions=s.counter(cat.SPOT_PREEMPTIONS),
        pool_choices=s.counter(cat.POOL_CHOICES),
        gpu_failures=s.counter(cat.GPU_FAILURES),
    )


@dataclass(frozen=True, slots=True)
class ReplicaRequestMetrics:
    """The per-request part of a replica's metrics; engine totals are ``snapshot_family``s."""

    ttft: Histogram
    itl: Histogram
    e2e: Histogram
    request_success: Counter
    errors: Counter


def build_replica_metrics(registry: CollectorRegistry) -> ReplicaRequestMetrics:
    s = build_group(Component.REPLICA, registry)
    return ReplicaRequestMetrics(
        ttft=s.histogram(cat.VLLM_TTFT),
        itl=s.histogram(cat.VLLM_ITL),
        e2e=s.histogram(cat.VLLM_E2E),
        request_success=s.counter(cat.VLLM_REQUEST_SUCCESS),
        errors=s.counter(cat.REPLICA_ERRORS),
    )


@dataclass(frozen=True, slots=True)
class CostMetrics:
    cost_per_hour_usd: Gauge
    cost_per_million_tokens_usd: Gauge


def build_cost_metrics(registry: CollectorRegistry) -> CostMetrics:
    s = build_group(Component.COST, registry)
    return CostMetrics(
        cost_per_hour_usd=s.gauge(cat.COST_PER_HOUR),
        cost_per_million_tokens_usd=s.gauge(cat.COST_PER_MTOK),
    )


@dataclass(frozen=True, slots=True)
class AlertMetrics:
    alert_active: Gauge
    deviation_score: Gauge


def build_alert_metrics(registry: CollectorRegistry) -> AlertMetrics:
    s = build_group(Component.ALERTS, registry)
    return AlertMetrics(
        alert_active=s.gauge(cat.ALERT_ACTIVE), deviation_score=s.gauge(cat.BASELINE_SCORE)
    )


@dataclass(frozen=True, slots=True)
class RolloutMetrics:
    """What the rollout controller exposes on each decision (``services.rollout_metrics``)."""

    traffic_share: Gauge
    step: Gauge
    state: Gauge
    decisions: Counter
    window_median: Gauge


def build_rollout_metrics(registry: CollectorRegistry) -> RolloutMetrics:
    s = build_group(Component.ROLLOUT, registry)
    return RolloutMetrics(
        traffic_share=s.gauge(cat.ROLLOUT_TRAFFIC),
        step=s.gauge(cat.ROLLOUT_STEP),
        state=s.gauge(cat.ROLLOUT_STATE),
        decisions=s.counter(cat.ROLLOUT_DECISIONS_TOTAL),
        window_median=s.gauge(cat.ROLLOUT_WINDOW_MEDIAN),
    )


@dataclass(frozen=True, slots=True)
class FrontDoorMetrics:
    """The global front door's counters; ``plane_serving`` is snapshotted at scrape time."""

    requests: Counter
    retries: Counter
    midstream_errors: Counter
    failovers: Counter
    placements: Counter


def build_front_door_metrics(registry: CollectorRegistry) -> FrontDoorMetrics:
    s = build_group(Component.FRONT_DOOR, registry)
    return FrontDoorMetrics(
        requests=s.counter(cat.FRONT_DOOR_REQUESTS),
        retries=s.counter(cat.FRONT_DOOR_RETRIES),
        midstream_errors=s.counter(cat.FRONT_DOOR_MIDSTREAM),
        failovers=s.counter(cat.FRONT_DOOR_FAILOVERS),
        placements=s.counter(cat.FRONT_DOOR_PLACEMENTS),
    )


def publish_deviation(
    metrics: AlertMetrics, *, deployment: str, metric: str, score: float | None, active: bool
) -> None:
    """Expose one baseline decision: its score and ``shipit_alert_active`` (1 firing, else 0).

    Takes plain values so this module needs nothing from ``telemetry.baseline``; a caller passes
    ``decision.score`` and ``decision.active``.
    """
    if score is not None:
        metrics.deviation_score.labels(deployment=deployment, metric=metric).set(score)
    metrics.alert_active.labels(
        deployment=deployment, metric=metric, alert="baseline_deviation"
    ).set(1.0 if active else 0.0)
