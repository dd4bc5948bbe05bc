"""``shipit plan``: the real CLI, its JSON output and its errors (in-process and as a process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app

RUNNER = CliRunner()


def _json(*args: str) -> Any:
    res = RUNNER.invoke(build_app(), ["plan", *args, "--output", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_vram_json_known_values() -> None:
    out = _json(
        "vram",
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--gpu",
        "H100",
        "--max-model-len",
        "8192",
    )
    assert out["model_id"] == "llama-3.1-8b" and out["gpu_id"] == "h100-sxm"
    assert out["kv_bytes_per_token_total"] == 131072 and out["fits"] is True
    assert out["max_concurrent_seqs"] > 0 and out["reason"].startswith("fits")


def test_vram_misfit_lists_changes_in_table() -> None:
    res = RUNNER.invoke(
        build_app(),
        ["plan", "vram", "-m", "llama-3.1-70b", "-g", "a100-40gb", "--max-model-len", "8192"],
    )
    assert res.exit_code == 0, res.output
    assert "does not fit" in res.stdout and "--tp" in res.stdout


def test_perf_json() -> None:
    out = _json(
        "perf",
        "-m",
        "llama-3.1-8b",
        "-g",
        "h100",
        "--input-len",
        "1000",
        "--output-len",
        "200",
        "--concurrency",
        "16",
    )
    assert out["concurrency"] == 16 and out["tpot_ms"] > 0 and out["ttft_ms"] > 0
    assert out["output_tokens_per_s"] > 0 and out["bound"] in ("memory", "compute")


def test_recommend_json_is_ranked() -> None:
    out = _json(
        "recommend",
        "-m",
        "llama-3.1-8b",
        "--throughput",
        "5000",
        "--input-len",
        "500",
        "--output-len",
        "500",
        "--ttft-p99-ms",
        "1000",
        "--tpot-p99-ms",
        "40",
        "--providers",
        "lambda,runpod",
        "--max-gpus",
        "8",
    )
    costs = [r["usd_per_million_tokens"] for r in out["rows"]]
    assert costs and costs == sorted(costs)
    assert {r["provider"] for r in out["rows"]} <= {"lambda", "runpod"}


def test_replicas_json_with_autoscaling() -> None:
    out = _json(
        "replicas",
        "-m",
        "llama-3.1-8b",
        "-g",
        "h100",
        "--mean-rps",
        "20",
        "--peak-rps",
        "60",
        "--input-len",
        "1000",
        "--output-len",
        "200",
        "--ttft-ms",
        "800",
        "--tpot-ms",
        "40",
        "--queue-model",
        "md-c",
    )
    assert out["replicas_peak"] >= out["replicas_mean"] >= 1
    assert out["autoscaling"]["target_concurrency_per_replica"] >= 1
    assert out["autoscaling"]["max_replicas"] == out["replicas_peak"]


def test_cost_json_with_procurement() -> None:
    demand = ",".join(["4"] * 12 + ["12"] * 12)
    out = _json(
        "cost",
        "-m",
        "llama-3.1-8b",
        "-g",
        "h100",
        "--input-len",
        "1000",
        "--output-len",
        "200",
        "--provider",
        "aws",
        "--demand",
        demand,
        "--spot-fraction",
        "0.5",
    )
    assert out["token_cost"]["usd_per_million_output_tokens"] > 0
    assert out["procurement"]["reserved_gpus"] >= 4
    assert out["price_source"].startswith("aws")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["vram", "-m", "llama-3.1-8b", "-g", "h10"], "did you mean"),
        (["vram", "-m", "lama-3.1-8b", "-g", "h100"], "llama-3.1-8b"),
        (["vram", "-m", "qwen2.5-7b", "-g", "h100", "--tp", "8"], "use one of 1, 2, 4"),
        (
            [
                "recommend",
                "-m",
                "llama-3.1-8b",
                "--input-len",
                "10",
                "--output-len",
                "10",
                "--ttft-p99-ms",
                "100",
                "--tpot-p99-ms",
                "10",
            ],
            "exactly one of --rps",
        ),
        (
            [
                "replicas",
                "-m",
                "llama-3.1-8b",
                "-g",
                "h100",
                "--mean-rps",
                "5",
                "--peak-rps",
                "1",
                "--input-len",
                "10",
                "--output-len",
                "10",
                "--ttft-ms",
                "100",
                "--tpot-ms",
                "10",
            ],
            "peak_rps",
        ),
    ],
)
def test_errors_name_the_value(args: list[str], needle: str) -> None:
    res = RUNNER.invoke(build_app(), ["plan", *args])
    assert res.exit_code == 2
    assert needle in res.output


def test_local_config_json_as_model(tmp_path: Path) -> None:
    cfg = {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = _json("vram", "-m", str(tmp_path / "config.json"), "-g", "l4")
    assert out["kv_bytes_per_token_total"] == 23040


def test_help_teaches_with_examples() -> None:
    for cmd in ("vram", "perf", "recommend", "replicas", "cost"):
        res = RUNNER.invoke(build_app(), ["plan", cmd, "--help"])
        assert res.exit_code == 0 and "Examples" in res.stdout and "shipit plan" in res.stdout


def test_installed_entry_point_runs_as_a_process() -> None:
    exe = Path(sys.executable).parent / "shipit"
    res = subprocess.run(
        [
            str(exe),
            "plan",
            "vram",
            "-m",
            "deepseek-v3",
            "-g",
            "h200",
            "--tp",
            "8",
            "--max-model-len",
            "32768",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["kv_bytes_per_token_total"] == 70272 and out["dtype"] == "fp8"
