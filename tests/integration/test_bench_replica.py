"""``shipit bench`` against a real ``shipit replica`` (simulated H100): the bench's counts
match the replica's own counters, and its latencies agree with the replica's histograms.

The replica measures from request arrival to its last token; the bench from send to last byte,
so the bench's means must be at least the replica's and exceed them by no more than loopback
and HTTP overhead (we allow 50 ms per request on average). No assertion is about speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipit.bench.api import run_bench
from shipit.bench.config import BenchConfig, LoadConfig, TargetConfig, WorkloadConfig
from support.replica_process import Replica, start_replica

OUTPUT_TOKENS, REQUESTS = 16, 12
OVERHEAD_S = 0.05


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    r = start_replica(
        tmp_path_factory.mktemp("logs"),
        "--simulate",
        "H100:llama-3.1-8b",
        "--max-num-seqs",
        "4",
        model="llama-3.1-8b",
    )
    yield r
    assert r.stop() == 0, r.log.read_text()


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_bench_counts_and_latencies_agree_with_the_replica(
    replica: Replica, tmp_path: Path
) -> None:
    before = replica.metrics()
    cfg = BenchConfig(
        target=TargetConfig(url=replica.url, model=replica.model, ignore_eos=True),
        workload=WorkloadConfig(input_tokens="64", output_tokens=str(OUTPUT_TOKENS)),
        load=LoadConfig(num_requests=REQUESTS, warmup_requests=0, concurrencies=(3,)),
    )
    result: dict[str, Any] = asyncio.run(run_bench(cfg))
    after = replica.metrics()
    (point,) = result["points"]
    s = point["summary"]
    assert (s["requests"], s["completed"], s["failed"]) == (REQUESTS, REQUESTS, 0)
    assert s["tokens_source"] == "usage"
    assert s["output_tokens"] == REQUESTS * OUTPUT_TOKENS
    assert delta(after, before, "vllm:generation_tokens_total") == REQUESTS * OUTPUT_TOKENS
    assert delta(after, before, "vllm:e2e_request_latency_seconds_count") == REQUESTS
    assert s["input_tokens"] == delta(after, before, "vllm:prompt_tokens_total")

    replica_e2e_s = delta(after, before, "vllm:e2e_request_latency_seconds_sum") / REQUESTS
    replica_ttft_s = delta(after, before, "vllm:time_to_first_token_seconds_sum") / REQUESTS
    bench_e2e_s = sum(r["e2e_ms"] for r in point["requests"]) / REQUESTS / 1e3
    bench_ttft_s = sum(r["ttft_ms"] for r in point["requests"]) / REQUESTS / 1e3
    assert replica_e2e_s <= bench_e2e_s <= replica_e2e_s + OVERHEAD_S
    assert replica_ttft_s <= bench_ttft_s <= replica_ttft_s + OVERHEAD_S
