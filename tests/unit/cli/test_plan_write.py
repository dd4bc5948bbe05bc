"""``shipit plan replicas --write-config``: the planned autoscaling block lands in the named
deployment of ``shipit.yaml``, other settings are kept, and a bad target is refused unwritten."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from shipit.cli.plan import plan_app
from shipit.config.gateway import load_config

PLAN = [
    "replicas", "-m", "llama-3.1-8b", "-g", "h100", "--mean-rps", "20", "--input-len", "1000",
    "--output-len", "200", "--ttft-ms", "800", "--tpot-ms", "40", "-o", "json",
]  # fmt: skip


def test_the_block_is_written_into_the_named_deployment(tmp_path: Path) -> None:
    path = tmp_path / "shipit.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "deployments": [
                    {"name": "a", "model": "m1", "autoscaling": {"idle_timeout_s": 42}},
                    {"name": "b", "model": "m2"},
                ]
            }
        )
    )
    res = CliRunner().invoke(plan_app, [*PLAN, "--write-config", str(path), "--deployment", "a"])
    assert res.exit_code == 0, res.output
    planned = json.loads(res.stdout)["autoscaling"]
    config = load_config(path)
    a, b = config.deployments
    assert a.autoscaling is not None and b.autoscaling is None
    assert a.model == "m1" and a.autoscaling.idle_timeout_s == 42  # kept
    assert a.autoscaling.min_replicas == planned["min_replicas"]
    assert a.autoscaling.max_replicas == planned["max_replicas"]
    assert a.autoscaling.target_concurrency == planned["target_concurrency_per_replica"]
    assert a.autoscaling.scale_down_delay_s == round(planned["scale_down_delay_s"], 1)


def test_several_deployments_need_a_name_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "shipit.yaml"
    original = yaml.safe_dump({"deployments": [{"name": "a"}, {"name": "b"}]})
    path.write_text(original)
    res = CliRunner().invoke(plan_app, [*PLAN, "--write-config", str(path)])
    assert res.exit_code != 0 and "--deployment" in res.output
    res = CliRunner().invoke(plan_app, [*PLAN, "--write-config", str(path), "--deployment", "c"])
    assert res.exit_code != 0 and "'c'" in res.output
    assert path.read_text() == original


def test_an_absent_file_is_created_with_one_deployment(tmp_path: Path) -> None:
    path = tmp_path / "new" / "shipit.yaml"
    res = CliRunner().invoke(plan_app, [*PLAN, "--write-config", str(path)])
    assert res.exit_code == 0, res.output
    planned = json.loads(res.stdout)["autoscaling"]
    (only,) = load_config(path).deployments
    assert only.name == "default" and only.autoscaling is not None
    assert only.autoscaling.max_replicas == planned["max_replicas"]
