"""``shipit plan``: one module per subcommand, registered once on the plan group."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shipit.cli import (
    plan_cost,
    plan_perf,
    plan_procure,
    plan_recommend,
    plan_replicas,
    plan_vram,
)
from shipit.cli.plan import plan_app
from shipit.cli.plan_common import jsonable, split_csv


def test_every_subcommand_is_registered_from_its_module() -> None:
    by_name = {c.name: c for c in plan_app.registered_commands}
    assert sorted(by_name) == ["cost", "perf", "procure", "recommend", "replicas", "vram"]
    modules = {
        "vram": plan_vram,
        "perf": plan_perf,
        "recommend": plan_recommend,
        "replicas": plan_replicas,
        "cost": plan_cost,
        "procure": plan_procure,
    }
    for name, module in modules.items():
        assert by_name[name].help == module.HELP and "Examples:" in module.HELP
        assert by_name[name].callback is not None
        assert by_name[name].callback.__module__ == module.__name__


def test_help_lists_the_subcommands() -> None:
    res = CliRunner().invoke(plan_app, ["--help"])
    assert res.exit_code == 0
    for name in ("vram", "perf", "recommend", "replicas", "cost"):
        assert name in res.output


@pytest.mark.parametrize(
    ("values", "expected"),
    [(["aws,gcp", " lambda "], ("aws", "gcp", "lambda")), (["", ","], ()), ([], ())],
)
def test_split_csv(values: list[str], expected: tuple[str, ...]) -> None:
    assert split_csv(values) == expected


def test_jsonable_rounds_floats_and_flattens_records() -> None:
    out = jsonable({"a": (1.23456789, [2]), 3: None})
    assert out == {"a": [1.234568, [2]], "3": None}


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "SmolLM2-135M-Instruct", "smollm2-135m"])
def test_plan_accepts_the_served_model_name(name: str) -> None:
    """What `shipit up` serves and clients send as `model` is a model id for plan too."""
    res = CliRunner().invoke(plan_app, ["vram", "-m", name, "--gpu", "L4", "-o", "json"])
    assert res.exit_code == 0, res.output
    assert '"smollm2-135m"' in res.output


def test_plan_cost_labels_the_mix_and_the_all_on_demand_figures() -> None:
    args = ["cost", "-m", "llama-3.1-8b", "--gpu", "H100", "--input-len", "500"]
    args += [
        "--output-len",
        "200",
        "--provider",
        "aws",
        "--demand",
        ",".join(["2"] * 12 + ["6"] * 12),
    ]
    as_json = CliRunner().invoke(plan_app, [*args, "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    import json

    mix = json.loads(as_json.output)["procurement"]
    assert mix["usd_per_day"] != mix["usd_per_day_all_on_demand"]
    table = CliRunner().invoke(plan_app, args, env={"COLUMNS": "200"})
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in table.output.splitlines()
        if line.count("│") == 3
    }
    assert rows["$/day all on-demand"] == f"${mix['usd_per_day_all_on_demand']:,.0f}"
    assert rows["$/day with this mix"] == f"${mix['usd_per_day']:,.0f}"


def test_plan_recommend_marks_uncalibrated_gpus_and_says_when_one_ranks_first() -> None:
    args = ["recommend", "-m", "llama-3.1-70b", "--rps", "5", "--input-len", "1500"]
    args += ["--output-len", "300", "--ttft-p99-ms", "2000", "--tpot-p99-ms", "50"]
    as_json = CliRunner().invoke(plan_app, [*args, "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    import json

    rows = json.loads(as_json.output)["rows"]
    by_gpu = {r["gpu_id"]: r["calibrated"] for r in rows}
    assert by_gpu["h100-sxm"] is True and by_gpu["mi300x"] is False
    assert not rows[0]["calibrated"], "premise: an uncalibrated GPU ranks first here"
    table = CliRunner().invoke(plan_app, args, env={"COLUMNS": "200"})
    assert f"{rows[0]['gpu_id']} *" in table.output
    assert f"the first-ranked option ({rows[0]['gpu_id']}) is uncalibrated" in table.output
    assert "uncalibrated GPU" in rows[0]["reason"]
