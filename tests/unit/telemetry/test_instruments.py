"""Collectors built from the catalog land in the caller's registry with the catalog's names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shipit.telemetry import catalog as cat
from shipit.telemetry import instruments as ins
from shipit.telemetry.catalog import Component, MetricKind, Update
from shipit.telemetry.process import NvmlCollector, ProcessCollector, nvml_collector


def _exposed(registry: CollectorRegistry) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("component", list(Component))
def test_build_group_makes_every_instrument_of_a_component(component: Component) -> None:
    registry = CollectorRegistry()
    built = ins.build_group(component, registry)
    expected = {s.name for s in cat.group(component) if s.update is Update.INSTRUMENT}
    assert built.names() == expected


def test_holders_cover_every_instrument_and_nothing_touches_the_global_registry() -> None:
    before = set(REGISTRY._names_to_collectors)
    builders = {
        Component.GATEWAY: ins.build_gateway_metrics,
        Component.CONTROL_PLANE: ins.build_control_plane_metrics,
        Component.REPLICA: ins.build_replica_metrics,
        Component.COST: ins.build_cost_metrics,
        Component.ALERTS: ins.build_alert_metrics,
    }
    for component, build in builders.items():
        holder = build(CollectorRegistry())
        fields = holder.__slots__  # type: ignore[attr-defined]
        instruments = [s for s in cat.group(component) if s.update is Update.INSTRUMENT]
        assert len(fields) == len(instruments), component
    assert set(REGISTRY._names_to_collectors) == before


def test_gateway_metrics_expose_catalog_names_labels_and_buckets() -> None:
    registry = CollectorRegistry()
    m = ins.build_gateway_metrics(registry)
    m.requests.labels(deployment="chat", status="200", policy="prefix_cache").inc()
    m.ttft.labels(deployment="chat").observe(0.21)
    families = _exposed(registry)
    # The text parser reports counters under their name without ``_total``.
    requests = families["shipit_requests"]
    assert requests.type == "counter"
    sample = next(s for s in requests.samples if s.name == "shipit_requests_total")
    assert sample.labels == {"deployment": "chat", "status": "200", "policy": "prefix_cache"}
    ttft = families[cat.TTFT.name]
    bounds = [float(s.labels["le"]) for s in ttft.samples if s.name.endswith("_bucket")]
    assert bounds[:-1] == list(cat.TTFT.buckets_s)


def test_two_registries_hold_independent_metrics() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ins.build_control_plane_metrics(a).replicas_desired.labels(deployment="d").set(3)
    ins.build_control_plane_metrics(b)
    assert a.get_sample_value("shipit_replicas_desired", {"deployment": "d"}) == 3
    assert b.get_sample_value("shipit_replicas_desired", {"deployment": "d"}) is None


def test_snapshot_specs_are_refused_as_instruments_and_built_as_families() -> None:
    with pytest.raises(ValueError, match="snapshot_family"):
        ins.build_instrument(cat.VLLM_KV_USAGE, CollectorRegistry())
    family = ins.snapshot_family(cat.VLLM_PREFIX_HITS, [(("llama",), 42.0)])
    assert family.type == "counter" and family.name == "vllm:prefix_cache_hits"
    assert family.samples[0].name == "vllm:prefix_cache_hits_total"
    with pytest.raises(ValueError, match="expected labels"):
        ins.snapshot_family(cat.VLLM_KV_USAGE, [(("llama", "extra"), 0.5)])


def test_instrument_set_checks_the_kind_asked_for() -> None:
    s = ins.build_group(Component.GATEWAY, CollectorRegistry())
    with pytest.raises(TypeError, match="histogram"):
        s.counter(cat.TTFT)
    with pytest.raises(KeyError, match="not an instrument"):
        s.gauge(cat.QUEUE_DEPTH)


def test_process_collector_exposes_cpu_and_rss() -> None:
    registry = CollectorRegistry()
    registry.register(ProcessCollector("gateway", cpu_s=lambda: 1.5, rss_bytes=lambda: 2048.0))
    labels = {"component": "gateway"}
    assert registry.get_sample_value("shipit_process_cpu_seconds_total", labels) == 1.5
    assert registry.get_sample_value("shipit_process_resident_memory_bytes", labels) == 2048.0


def test_process_collector_reads_this_process_by_default() -> None:
    registry = CollectorRegistry()
    registry.register(ProcessCollector("test"))
    rss = registry.get_sample_value("shipit_process_resident_memory_bytes", {"component": "test"})
    cpu = registry.get_sample_value("shipit_process_cpu_seconds_total", {"component": "test"})
    assert cpu is not None and cpu > 0
    assert rss is None or rss > 1_000_000


class _FakeNvml:
    """The slice of ``pynvml`` the collector calls, with two GPUs."""

    def __init__(self) -> None:
        self.initialised = False

    def nvmlInit(self) -> None:  # noqa: N802
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:  # noqa: N802
        return b"NVIDIA H200" if handle == 0 else "NVIDIA L4"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=87 if handle == 0 else 0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=100 * (handle + 1), total=1000)


def test_nvml_collector_reports_each_gpu() -> None:
    registry = CollectorRegistry()
    registry.register(NvmlCollector(_FakeNvml()))
    h200 = {"gpu": "0", "gpu_name": "NVIDIA H200"}
    assert registry.get_sample_value("shipit_accelerator_utilization_ratio", h200) == 0.87
    l4 = {"gpu": "1", "gpu_name": "NVIDIA L4"}
    assert registry.get_sample_value("shipit_accelerator_memory_used_bytes", l4) == 200
    assert registry.get_sample_value("shipit_accelerator_memory_total_bytes", l4) == 1000


def test_nvml_collector_is_absent_without_the_module() -> None:
    assert nvml_collector("shipit_no_such_nvml_module") is None


def test_every_kind_maps_to_its_prometheus_type() -> None:
    registry = CollectorRegistry()
    for component in Component:
        ins.build_group(component, registry)
    families = _exposed(registry)
    instruments = [s for s in cat.CATALOG if s.update is Update.INSTRUMENT]
    assert {s.kind for s in instruments} == set(MetricKind)
    for spec in instruments:
        family = families[spec.name.removesuffix("_total")]
        assert family.type == spec.kind.value
        assert family.documentation == spec.help
