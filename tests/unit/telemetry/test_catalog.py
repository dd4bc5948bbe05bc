"""The catalog: names follow Prometheus conventions, each is defined once, specs validate."""

from __future__ import annotations

import re

import pytest

from shipit.telemetry import catalog as cat
from shipit.telemetry.catalog import Component, MetricKind, MetricSpec

VLLM_NAMES = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:lora_requests_info",
}


def test_every_name_is_unique_and_valid() -> None:
    names = [s.name for s in cat.CATALOG]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name


def test_every_component_has_metrics_and_gateway_ones_are_shipit_prefixed() -> None:
    for component in Component:
        assert cat.group(component), component
    for component in (Component.GATEWAY, Component.CONTROL_PLANE, Component.COST):
        assert all(s.name.startswith("shipit_") for s in cat.group(component))


def test_replica_group_keeps_vllm_names_with_model_name_label() -> None:
    replica = {s.name: s for s in cat.group(Component.REPLICA)}
    assert set(replica) >= VLLM_NAMES
    assert all(s.labels[0] == "model_name" for s in replica.values())


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("shipit_requests_total", ("deployment", "status", "policy")),
        ("shipit_routing_decisions_total", ("deployment", "policy", "reason")),
        ("shipit_replicas", ("deployment", "state")),
        ("shipit_scale_events_total", ("deployment", "direction")),
        ("shipit_alert_active", ("deployment", "metric", "alert")),
        ("shipit_cold_start_phase_seconds", ("deployment", "phase")),
    ],
)
def test_the_documented_metrics_carry_their_labels(name: str, labels: tuple[str, ...]) -> None:
    assert cat.by_name(name).labels == labels


def test_latency_histograms_are_seconds_with_llm_sized_buckets() -> None:
    for spec in cat.CATALOG:
        if spec.kind is MetricKind.HISTOGRAM:
            assert spec.unit == "seconds" and spec.name.endswith("_seconds")
    # TTFT spans a cached 10 ms prefill to a minute-long queue; TPOT a fast decode to a stall.
    assert cat.TTFT.buckets_s[0] <= 0.01 and cat.TTFT.buckets_s[-1] >= 60
    assert cat.TPOT.buckets_s[0] <= 0.005 and cat.TPOT.buckets_s[-1] >= 1


def test_by_name_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="shipit_requests_total"):
        cat.by_name("shipit_request_total")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x_requests", "kind": MetricKind.COUNTER}, "must end with '_total'"),
        ({"name": "x_total", "kind": MetricKind.GAUGE}, "only counters"),
        ({"name": "x_seconds", "kind": MetricKind.HISTOGRAM}, "increasing buckets_s"),
        ({"name": "x", "kind": MetricKind.GAUGE, "buckets_s": (1.0,)}, "only histograms"),
        ({"name": "shipit_wait", "kind": MetricKind.GAUGE, "unit": "seconds"}, "'_seconds'"),
        ({"name": "x", "kind": MetricKind.GAUGE, "label_values": (("a", ("b",)),)}, "label"),
    ],
)
def test_bad_specs_are_refused_at_definition(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"help": "h", "component": Component.GATEWAY, "unit": "requests"}
    with pytest.raises(ValueError, match=message):
        MetricSpec(**(base | kwargs))  # type: ignore[arg-type]


def test_series_names_cover_histogram_parts() -> None:
    names = set(cat.series_names())
    assert {"shipit_queue_wait_seconds_bucket", "shipit_queue_wait_seconds_count"} <= names
    assert "shipit_queue_wait_seconds" not in names
    assert cat.REPLICAS.allowed_values("state") == (
        "starting", "ready", "draining", "cordoned", "failed",
    )  # fmt: skip
    assert cat.REPLICAS.allowed_values("deployment") is None


def test_the_observability_doc_lists_every_catalog_metric() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "observability.md").read_text()
    missing = [s.name for s in cat.CATALOG if f"`{s.name}`" not in doc]
    assert not missing, f"add to docs/observability.md's catalog table: {missing}"
