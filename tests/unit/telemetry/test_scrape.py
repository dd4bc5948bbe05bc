"""The scrape configuration: the checked-in example equals the generator, job names match what
ShipitTargetDown selects, and file_sd targets come from ``/shipit/status``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from shipit.telemetry import rules
from shipit.telemetry.scrape import (
    EXAMPLE_FILE,
    GATEWAY_JOB,
    REPLICA_JOB,
    example,
    replica_targets,
    write_targets,
)

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def test_checked_in_example_equals_the_generator() -> None:
    assert (DEPLOY / EXAMPLE_FILE).read_text() == example()


def test_job_names_are_selected_by_target_down() -> None:
    doc = yaml.safe_load(example())
    jobs = [j["job_name"] for j in doc["scrape_configs"]]
    assert jobs == [GATEWAY_JOB, REPLICA_JOB]
    alerts = yaml.safe_load(rules.render()[rules.ALERTS_FILE])["groups"][0]["rules"]
    expr = next(r["expr"] for r in alerts if r["alert"] == "ShipitTargetDown")
    pattern = re.search(r'job=~"([^"]+)"', expr)
    assert pattern is not None
    assert all(re.fullmatch(pattern.group(1), j) for j in jobs)
    assert doc["rule_files"] == [rules.RECORDING_FILE, rules.ALERTS_FILE]


def test_file_sd_targets_from_status(tmp_path: Path) -> None:
    status = {
        "deployments": [
            {
                "name": "chat",
                "replicas": [{"url": "http://127.0.0.1:9001"}, {"url": "http://h:9002/v1"}],
            },
            {"name": "idle", "replicas": []},
        ]
    }
    expected = [{"targets": ["127.0.0.1:9001", "h:9002"], "labels": {"deployment": "chat"}}]
    assert replica_targets(status) == expected
    write_targets(status, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == expected
