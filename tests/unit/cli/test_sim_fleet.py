"""``shipit sim fleet`` end to end on a tiny fleet: JSON, files and plots, the table, errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shipit.cli.main import build_app

FLEET = """\
fleet:
  planes:
    - name: us-east
      utc_offset_h: -5
      pools:
        reserved: {usd_per_gpu_hour: 2.0, max_replicas: 2}
        on_demand: {usd_per_gpu_hour: 4.0, obtain_delay_s: 60}
    - name: eu-west
      utc_offset_h: 1
      residency: [eu]
      pools:
        spot: {usd_per_gpu_hour: 1.5, obtain_delay_s: 60, preemptions_per_hour: 0.1,
               notice_s: 30}
  traffic:
    regions:
      - {name: americas, utc_offset_h: -5, share: 0.6}
      - {name: europe, utc_offset_h: 1, share: 0.4, residency: eu}
    replica: {concurrency: 8, prefill_tokens_per_s: 5000, decode_tokens_per_s: 50}
  simulation:
    outages: [{plane: us-east, at_h: 0.5, for_h: 0.25}]
"""


def invoke(*args: str) -> tuple[int, str, str]:
    # Wide enough that rich does not fold a long error (a temporary path) across lines.
    result = CliRunner().invoke(build_app(), ["sim", "fleet", *args], env={"COLUMNS": "400"})
    return result.exit_code, result.stdout, result.stderr


def files(tmp_path: Path, fleet: str = FLEET) -> tuple[Path, Path]:
    cfg, series = tmp_path / "fleet.yaml", tmp_path / "rates.csv"
    cfg.write_text(fleet)
    series.write_text("timestamp,rate\n0,4\n600,6\n1200,4\n")
    return cfg, series


def test_json_files_and_plots(tmp_path: Path) -> None:
    cfg, series = files(tmp_path)
    out = tmp_path / "run"
    code, stdout, _ = invoke(
        "--config",
        str(cfg),
        "--rate-series",
        str(series),
        "--hours",
        "1",
        "--seed",
        "3",
        "--out",
        str(out),
        "-o",
        "json",
    )
    assert code == 0, stdout
    report = json.loads(stdout)
    assert set(report["regions"]) == {"americas", "europe"}
    assert report["requests"] > 10_000  # about 4.7 requests/s for an hour
    assert [f["reason_code"] for f in report["failovers"]] == ["out", "back"]
    assert report["routed_to"]["americas->eu-west"] > 0  # during the outage
    assert "europe->us-east" not in report["routed_to"]  # residency
    assert "series" not in report  # the series goes to the file, not the terminal
    saved = json.loads((out / "fleet_sim.json").read_text())
    assert saved["cost_usd"] == report["cost_usd"] and len(saved["series"]["t_h"]) == 12
    for name in ("replicas.png", "slo.png", "cost.png", "faults.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_the_table(tmp_path: Path) -> None:
    cfg, series = files(tmp_path)
    code, stdout, _ = invoke("--config", str(cfg), "--rate-series", str(series), "--hours", "1")
    assert code == 0, stdout
    for text in (
        "TTFT <= 2000 ms",
        "americas",
        "europe",
        "$ per million tokens",
        "failover at 0.50 h",
        "us-east out",
    ):
        assert text in stdout, text


def test_a_trace_drives_it_with_its_own_lengths(tmp_path: Path) -> None:
    cfg, _ = files(tmp_path)
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            f'{{"timestamp": {i * 200}, "input_length": 2000, "output_length": 50}}\n'
            for i in range(600)
        )
    )
    code, stdout, _ = invoke(
        "--config", str(cfg), "--trace", str(trace), "--hours", "0.5", "-o", "json"
    )
    assert code == 0, stdout
    report = json.loads(stdout)
    assert report["service"]["input_len"] == 2000 and report["service"]["output_len"] == 50
    assert 8000 < report["requests"] < 10000  # 5/s for 30 min


def test_errors_say_what_is_wrong(tmp_path: Path) -> None:
    cfg, series = files(tmp_path)
    code, _, err = invoke("--config", str(cfg), "--hours", "1")
    assert code == 2 and "exactly one of --trace FILE or --rate-series FILE" in err
    bare = tmp_path / "bare.yaml"
    bare.write_text("fleet:\n  planes: [{name: a}]\n")
    code, _, err = invoke("--config", str(bare), "--rate-series", str(series))
    assert code == 2 and "no traffic: section" in err
    code, _, err = invoke("--config", str(cfg), "--rate-series", str(series), "--hours", "0")
    assert code == 2 and "--hours 0" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(FLEET.replace("plane: us-east, at_h", "plane: mars, at_h"))
    code, _, err = invoke("--config", str(bad), "--rate-series", str(series))
    assert code == 2 and "no plane 'mars'" in err
    code, _, err = invoke("--config", str(cfg), "--rate-series", str(tmp_path / "none.csv"))
    assert code == 2 and "cannot read rate series" in err


def test_a_prompt_whose_prefill_alone_misses_the_slo_is_warned_about(tmp_path: Path) -> None:
    cfg, _ = files(tmp_path)
    trace = tmp_path / "long.jsonl"
    trace.write_text(
        "".join(
            f'{{"timestamp": {i * 1000}, "input_length": 12000, "output_length": 50}}\n'
            for i in range(120)
        )
    )
    code, stdout, err = invoke("--config", str(cfg), "--trace", str(trace), "--hours", "0.1")
    assert code == 0, stdout
    assert "takes 2.40 s to prefill" in err and "every request misses it" in err


def test_the_spread_of_a_traces_service_times_sets_the_wait_variability(tmp_path: Path) -> None:
    # 5,000 prefill and 50 decode tokens/s: (1000 + 50) takes 0.2 + 1 = 1.2 s, (1000 + 150)
    # 0.2 + 3 = 3.2 s; half each: mean 2.2 s, variance 1.0, cs^2 = 1 / 2.2^2 = 0.2066
    cfg, _ = files(tmp_path)
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            f'{{"timestamp": {i * 200}, "input_length": 1000, '
            f'"output_length": {50 if i % 2 else 150}}}\n'
            for i in range(600)
        )
    )
    code, stdout, _ = invoke(
        "--config", str(cfg), "--trace", str(trace), "--hours", "0.1", "-o", "json"
    )
    assert code == 0, stdout
    assert json.loads(stdout)["service"]["service_cv2"] == 0.2066


def test_a_trace_is_replayed_request_by_request_unless_fluid_is_asked(tmp_path: Path) -> None:
    cfg, series = files(tmp_path)
    trace = tmp_path / "t.jsonl"
    trace.write_text(  # 5/s for 120 s, every request from Europe
        "".join(
            f'{{"timestamp": {i * 0.2:.1f}, "input_length": 2000, "output_length": 50, '
            '"region": "europe"}\n'
            for i in range(600)
        )
    )
    base = ("--config", str(cfg), "--trace", str(trace), "--hours", "0.02", "-o", "json")
    code, stdout, _ = invoke(*base)
    assert code == 0, stdout
    exact = json.loads(stdout)
    assert exact["traffic"] == "requests"
    assert exact["requests"] == 360  # 72 s at exactly 5/s
    assert set(exact["routed_to"]) == {"europe->eu-west"}  # the trace's region, all of them
    code, stdout, _ = invoke(*base, "--traffic", "fluid")
    assert code == 0, stdout
    fluid = json.loads(stdout)
    assert fluid["traffic"] == "fluid" and fluid["requests"] != 360  # Poisson draws
    assert "americas->us-east" in fluid["routed_to"]  # regions by their shares
    code, _, err = invoke(
        "--config", str(cfg), "--rate-series", str(series), "--traffic", "requests"
    )
    assert code == 2 and "give --trace FILE" in err
    code, _, err = invoke(*base, "--traffic", "exact")
    assert code == 2 and "--traffic 'exact' is not known" in err
    trace.write_text(trace.read_text().replace('"europe"', '"asia"', 1))
    code, _, err = invoke(*base)
    assert code == 2 and "request 1: region 'asia' is not one of" in err and "americas" in err
