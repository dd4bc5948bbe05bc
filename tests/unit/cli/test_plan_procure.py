"""``shipit plan procure``: files in, the comparison out, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from shipit.cli.plan import plan_app

BASE = ["procure", "-m", "llama-3.1-8b", "-g", "h100", "--provider", "aws"]
SLO = ["--ttft-ms", "2000", "--tpot-ms", "50"]


def _series(tmp_path: Path) -> Path:
    # A day in hours: 6 quiet hours at 2 req/s, 18 busy ones at 20 req/s.
    rows = ["timestamp,rate"] + [f"{h * 3600},{2 if h < 6 else 20}" for h in range(24)]
    p = tmp_path / "day.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_rate_series_gives_every_policy_and_a_recommendation(tmp_path: Path) -> None:
    args = [*BASE, "--rate-series", str(_series(tmp_path)), "--input-len", "1000"]
    args += ["--output-len", "200", *SLO, "--days", "7", "-o", "json"]
    res = CliRunner().invoke(plan_app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["steps"] == 168 and out["hours"] == 168
    cmp = out["comparison"]
    by = {o["policy"]: o for o in cmp["outcomes"]}
    assert set(by) == {"all-on-demand", "peak-reserved", "reserved+mix", "spothedge"}
    assert cmp["recommended"] in by and by[cmp["recommended"]]["slo_met"]
    cheapest = min(o["usd_per_week"] for o in by.values() if o["slo_met"])
    assert by[cmp["recommended"]]["usd_per_week"] == cheapest
    assert by[cmp["recommended"]]["usd_per_week"] < by["all-on-demand"]["usd_per_week"]


def test_without_spot_the_mix_reserves_the_busy_base(tmp_path: Path) -> None:
    args = [*BASE, "--rate-series", str(_series(tmp_path)), "--input-len", "1000"]
    args += ["--output-len", "200", *SLO, "--no-spot", "-o", "json"]
    res = CliRunner().invoke(plan_app, args)
    assert res.exit_code == 0, res.output
    by = {o["policy"]: o for o in json.loads(res.output)["comparison"]["outcomes"]}
    assert "spothedge" not in by
    mix, peak = by["reserved+mix"], by["peak-reserved"]
    # Busy 18 of 24 hours at a reserved/on-demand ratio of 0.63: the busy level is reserved.
    assert mix["reserved_replicas"] == peak["reserved_replicas"]


def test_trace_jsonl_is_bucketed_and_table_marks_the_recommendation(tmp_path: Path) -> None:
    lines = [
        json.dumps({"timestamp": i * 100, "input_length": 800, "output_length": 100})
        for i in range(600)
    ]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(lines) + "\n")
    args = [*BASE, "--trace", str(p), "--bucket-s", "10", *SLO]
    res = CliRunner().invoke(plan_app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "* " in res.output and "recommended:" in res.output


def test_bad_input_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,rps\n0,1\n")
    res = CliRunner().invoke(plan_app, [*BASE, "--rate-series", str(bad), *SLO])
    assert res.exit_code == 2 and "timestamp,rate" in res.output
    res = CliRunner().invoke(plan_app, [*BASE, *SLO])
    assert res.exit_code == 2 and "exactly one of" in res.output
    neg = tmp_path / "neg.csv"
    neg.write_text("timestamp,rate\n0,1\n3600,-2\n")
    args = [*BASE, "--rate-series", str(neg), "--input-len", "9", "--output-len", "9", *SLO]
    res = CliRunner().invoke(plan_app, args)
    assert res.exit_code == 2 and "line 3" in res.output and "negative" in res.output


def test_iso_timestamps_set_the_step(tmp_path: Path) -> None:
    p = tmp_path / "iso.csv"
    p.write_text(
        "timestamp,rate\n2026-01-05T00:00:00,3\n2026-01-05T00:30:00,9\n2026-01-05T01:00:00,5\n"
    )
    args = [*BASE, "--rate-series", str(p), "--input-len", "500", "--output-len", "100", *SLO]
    res = CliRunner().invoke(plan_app, [*args, "--days", "1", "-o", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["step_s"] == 1800 and out["steps"] == 48
