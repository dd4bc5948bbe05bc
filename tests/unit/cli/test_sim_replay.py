"""``shipit sim replay`` end to end on a tiny trace: JSON figures, the table, errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shipit.cli.main import build_app

TRACE = "".join(
    f'{{"timestamp": {i * 500}, "input_length": 800, "output_length": 20}}\n' for i in range(12)
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["sim", "replay", *args])
    return result.exit_code, result.stdout


def test_json_reports_the_figures(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(TRACE)
    code, out = invoke("--trace", str(trace), "--policy", "fixed:2", "-o", "json")
    assert code == 0, out
    report = json.loads(out[out.index("{") :])
    assert report["requests"] == 12 and report["dropped"] == 0
    assert report["slo_attainment"] == 1.0  # two warm replicas, one request every 0.5 s
    assert report["peak_replicas"] == 2 and report["replica_starts"] == 2
    # Over the 5.5 s of arrivals (the drain after is not counted); the oracle needs one.
    assert report["oracle_replica_seconds"] == 10
    assert report["replica_seconds"] == 11  # two replicas over 5.5 s


def test_scale_from_zero_misses_the_slo_during_the_cold_start(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "timestamp,prompt_tokens,completion_tokens\n"
        + "".join(f"{i * 0.5},800,20\n" for i in range(12))
    )
    code, out = invoke("--trace", str(trace), "--cold-start-s", "5", "-o", "json")
    assert code == 0, out
    report = json.loads(out[out.index("{") :])
    assert report["policy"] == "shipit" and report["replica_starts"] >= 1
    assert report["slo_attainment"] < 1.0  # the first requests wait for the cold start


def test_table_and_errors(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(TRACE)
    code, out = invoke("--trace", str(trace), "--policy", "fixed:1")
    assert code == 0 and "ratio to oracle" in out
    code, _ = invoke("--trace", str(tmp_path / "missing.jsonl"))
    assert code == 2
    code, _ = invoke("--trace", str(trace), "--policy", "magic")
    assert code == 2


def test_prefill_utilization_sizes_long_prompts_by_their_prefill(tmp_path: Path) -> None:
    # 12,000-token prompts, 4 a second for 30 s: about 1.7 s of prefill arriving a second.
    trace = tmp_path / "long.jsonl"
    trace.write_text(
        "".join(
            f'{{"timestamp": {i * 250}, "input_length": 12000, "output_length": 20}}\n'
            for i in range(120)
        )
    )

    def peak(*args: str) -> int:
        code, out = invoke("--trace", str(trace), "--min-replicas", "1", "-o", "json", *args)
        assert code == 0, out
        return int(json.loads(out[out.index("{") :])["peak_replicas"])

    off, low = peak("--prefill-utilization", "0"), peak("--prefill-utilization", "0.2")
    assert off < peak() < low  # the default, 0.5, between
