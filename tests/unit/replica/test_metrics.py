"""vLLM-named metrics in a per-app registry, read back with Prometheus' own parser."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from shipit.engine.engine import EngineStats
from shipit.replica.metrics import ReplicaMetrics

STATS = EngineStats(
    num_running=3,
    num_waiting=2,
    kv_cache_usage_perc=0.25,
    num_blocks=100,
    block_size=16,
    prefix_cache_queries=640,
    prefix_cache_hits=320,
    num_preemptions=1,
    prompt_tokens=500,
    generation_tokens=70,
    running_loras=("sql",),
    waiting_loras=("fr", "sql"),
    loaded_loras=("fr", "sql"),
)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_engine_figures_with_vllm_names_and_the_model_label() -> None:
    m = ReplicaMetrics("llama", max_loras=4)
    got = samples(m.render(STATS))
    label = (("model_name", "llama"),)
    assert got[("vllm:num_requests_running", label)] == 3
    assert got[("vllm:num_requests_waiting", label)] == 2
    assert got[("vllm:kv_cache_usage_perc", label)] == 0.25
    assert got[("vllm:prefix_cache_queries_total", label)] == 640
    assert got[("vllm:prefix_cache_hits_total", label)] == 320
    assert got[("vllm:num_preemptions_total", label)] == 1
    assert got[("vllm:prompt_tokens_total", label)] == 500
    assert got[("vllm:generation_tokens_total", label)] == 70
    info = [k for k in got if k[0] == "vllm:lora_requests_info"]
    assert dict(info[0][1]) == {
        "model_name": "llama",
        "max_lora": "4",
        "running_lora_adapters": "sql",
        "waiting_lora_adapters": "fr,sql",
    }
    cache = (("block_size", "16"), ("model_name", "llama"), ("num_gpu_blocks", "100"))
    assert got[("vllm:cache_config_info", cache)] == 1.0


def test_request_latencies_are_observed() -> None:
    m = ReplicaMetrics("llama", max_loras=1)
    timer = m.timer()
    timer.tokens(1)
    timer.tokens(1)
    timer.tokens(2)
    timer.done("length")
    got = samples(m.render(dataclasses.replace(STATS, running_loras=())))
    label = (("model_name", "llama"),)
    assert got[("vllm:time_to_first_token_seconds_count", label)] == 1
    assert got[("vllm:inter_token_latency_seconds_count", label)] == 3
    assert got[("vllm:e2e_request_latency_seconds_count", label)] == 1
    ok = (("finished_reason", "length"), ("model_name", "llama"))
    assert got[("vllm:request_success_total", ok)] == 1


def test_each_app_has_its_own_registry() -> None:
    a, b = ReplicaMetrics("a", max_loras=1), ReplicaMetrics("b", max_loras=1)
    a.timer().done("stop")
    assert b"finished_reason" not in b.render(None)
    assert b"vllm:num_requests_running" not in a.render(None)  # no snapshot, no engine gauges


def test_replica_series_are_the_catalogs_and_include_process_figures() -> None:
    from shipit.telemetry import catalog as cat

    m = ReplicaMetrics("llama", max_loras=1)
    m.timer().done("stop")
    names = {fam.name for fam in text_string_to_metric_families(m.render(STATS).decode())}
    replica_specs = {s.name.removesuffix("_total") for s in cat.group(cat.Component.REPLICA)}
    assert replica_specs <= names
    assert "shipit_process_cpu_seconds" in names and "shipit_process_resident_memory_bytes" in names
