"""shipit bench against a fake OpenAI server (a separate process on 127.0.0.1) with known timing.

The server waits TTFT_S before the first token and ITL_S between tokens. Tolerance: a measured
TTFT/TPOT may never be below the injected delay (minus 0.5 ms of timer slack) and may exceed it
by at most the loopback, HTTP and event-loop overhead we allow: TTFT +40 ms per request (+15 ms
at the median), TPOT +25% + 2 ms. Counts must match exactly. No assertion is about our speed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipit.bench.api import run_bench
from shipit.bench.config import BenchConfig, LoadConfig, TargetConfig, WorkloadConfig
from shipit.cli.main import build_app
from support.fake_openai import FakeTiming, received, serve

TTFT_S, ITL_S, TOKENS = 0.05, 0.01, 8


@pytest.fixture(scope="module")
def timed_url() -> Iterator[str]:
    with serve(FakeTiming(ttft_s=TTFT_S, itl_s=ITL_S, output_tokens=TOKENS)) as url:
        yield url


def bench(url: str, **load: Any) -> dict[str, Any]:
    workload = load.pop("workload", WorkloadConfig(input_tokens="16", output_tokens=str(TOKENS)))
    slo = load.pop("slo_ms", {})
    cfg = BenchConfig(
        target=TargetConfig(url=url, model="m"),
        workload=workload,
        load=LoadConfig(**load),
        slo_ms=slo,
    )
    return asyncio.run(run_bench(cfg))


def check_timing(point: dict[str, Any], n: int) -> None:
    s = point["summary"]
    assert (s["requests"], s["completed"], s["failed"]) == (n, n, 0)
    assert s["output_tokens"] == n * TOKENS and s["tokens_source"] == "usage"
    ttft_ms, itl_ms = TTFT_S * 1e3, ITL_S * 1e3
    for row in point["requests"]:
        assert row["output_tokens"] == TOKENS
        assert ttft_ms - 0.5 <= row["ttft_ms"] <= ttft_ms + 40
        assert itl_ms - 0.5 <= row["tpot_ms"] <= itl_ms * 1.25 + 2
        assert row["e2e_ms"] >= ttft_ms + (TOKENS - 1) * itl_ms - 0.5
    assert s["ttft_ms"]["p50"] <= ttft_ms + 15
    assert s["itl_ms"]["count"] == n * (TOKENS - 1)


def test_open_loop_poisson_reports_the_injected_timing(timed_url: str) -> None:
    result = bench(timed_url, num_requests=20, rates_rps=(40.0,))
    (point,) = result["points"]
    check_timing(point, 20)
    assert point["summary"]["send_lag_ms"]["count"] == 20


def test_closed_loop_sweep_reports_the_injected_timing(timed_url: str) -> None:
    result = bench(
        timed_url,
        num_requests=12,
        concurrencies=(1, 4),
        slo_ms={"ttft_p99_ms": 1000, "tpot_p99_ms": 1000},
    )
    assert [p["value"] for p in result["points"]] == [1.0, 4.0]
    for point in result["points"]:
        check_timing(point, 12)
        s = point["summary"]
        assert s["goodput_rps"] == pytest.approx(s["request_throughput_rps"])
        assert s["slo_met"] == {"ttft_p99_ms": True, "tpot_p99_ms": True}
    assert result["points"][1]["summary"]["max_in_flight"] == 4


def test_multi_turn_sessions_send_history_and_adapters(timed_url: str) -> None:
    before = len(received(timed_url))
    wl = WorkloadConfig(input_tokens="4", output_tokens="3", turns=3, lora_mix="sql=1")
    result = bench(timed_url, num_requests=6, concurrencies=(2,), workload=wl, warmup_requests=0)
    assert result["points"][0]["summary"]["completed"] == 6
    bodies = received(timed_url)[before:]
    assert {b["model"] for b in bodies} == {"sql"}
    assert sorted(len(b["messages"]) for b in bodies) == [1, 1, 3, 3, 5, 5]
    third = next(b for b in bodies if len(b["messages"]) == 5)
    assert third["messages"][1]["role"] == "assistant" and "tok0" in third["messages"][1]["content"]


def test_without_usage_tokens_are_counted_from_chunks_and_said_so() -> None:
    with serve(FakeTiming(output_tokens=5, send_usage=False)) as url:
        result = bench(url, num_requests=4, concurrencies=(2,))
    s = result["points"][0]["summary"]
    assert s["tokens_source"] == "chunks" and s["output_tokens"] == 20
    assert any("counting streamed content chunks" in n for n in result["notes"])


def test_server_errors_are_counted_by_kind() -> None:
    with serve(FakeTiming(output_tokens=2, fail_every=3)) as url:
        result = bench(url, num_requests=9, concurrencies=(1,), warmup_requests=0)
    s = result["points"][0]["summary"]
    assert (s["completed"], s["failed"], s["errors_by_kind"]) == (6, 3, {"http_500": 3})
    assert any("failed" in n for n in result["notes"])


def test_cli_run_writes_result_and_plots_then_compares(timed_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "bench",
        "--url",
        timed_url,
        "--model",
        "m",
        "--num-requests",
        "6",
        "--concurrency",
        "3",
        "--output-tokens",
        "8",
        "--slo",
        "ttft_p99_ms=500",
    ]
    first = runner.invoke(
        build_app(),
        [*args, "--result-json", str(tmp_path / "a.json"), "--plots", str(tmp_path / "plots")],
    )
    assert first.exit_code == 0, first.output
    assert "TTFT P99 ms" in first.output and "6/6" in first.output
    assert (tmp_path / "plots" / "latency_cdf.png").exists()
    second = runner.invoke(build_app(), [*args, "--output", "json"])
    assert second.exit_code == 0, second.output
    (tmp_path / "b.json").write_text(second.stdout)
    assert json.loads(second.stdout)["points"][0]["summary"]["completed"] == 6
    cmp = runner.invoke(
        build_app(), ["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    )
    assert cmp.exit_code == 0, cmp.output
    assert "ttft_ms p99" in cmp.output


def test_cli_errors_are_plain() -> None:
    runner = CliRunner()
    missing = runner.invoke(build_app(), ["bench", "--model", "m"])
    assert missing.exit_code == 2 and "--url and --model are required" in missing.output
    bad = runner.invoke(
        build_app(), ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--slo", "ttft=5"]
    )
    assert bad.exit_code == 2 and "ttft_p99_ms=500" in bad.output
    down = runner.invoke(
        build_app(), ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--num-requests", "1"]
    )
    assert down.exit_code == 2 and "warm-up request" in down.output


def test_without_usage_a_tokenizer_counts_the_streamed_text(tmp_path: Path) -> None:
    from support.tiny_model import tiny_tokenizer

    tok = tiny_tokenizer(384)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    with serve(FakeTiming(output_tokens=5, send_usage=False)) as url:
        cfg = BenchConfig(
            target=TargetConfig(url=url, model="m", tokenizer=str(path)),
            workload=WorkloadConfig(input_tokens="16", output_tokens="5"),
            load=LoadConfig(num_requests=4, warmup_requests=0, concurrencies=(2,)),
        )
        result = asyncio.run(run_bench(cfg))
    (point,) = result["points"]
    assert point["summary"]["tokens_source"] == "tokenizer"
    # The fake server streams " tok0", " tok1", ...: the count is the tokenizer's, not 5 chunks.
    expected = len(tok.encode("".join(f" tok{i}" for i in range(5))).ids)
    assert expected != 5
    assert [row["output_tokens"] for row in point["requests"]] == [expected] * 4
    assert any("--tokenizer" in n for n in result["notes"])
