"""Real promtool: the shipped rules load, their unit tests pass, every dashboard query parses.

Needs ``promtool`` (Debian package ``prometheus``; ``.ci/run`` installs it); skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shipit.telemetry import dashboards

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not on PATH; install it with: "
    "apt-get install -y --no-install-recommends prometheus",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_accepts_the_shipped_rules() -> None:
    files = sorted(str(p) for p in PROMETHEUS.glob("*.rules.yml"))
    assert files
    done = _promtool("check", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS / "tests").glob("*_test.yml"))
    assert len(tests) >= 2
    done = _promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana variables substituted)."""
    rules = []
    for text in dashboards.render().values():
        for panel in json.loads(text)["panels"]:
            for target in panel.get("targets", []):  # a row header has none
                expr = target["expr"].replace("$__rate_interval", "5m")
                expr = expr.replace("$deployment", ".*").replace("$model_name", ".*")
                rules.append({"record": f"dashboard:query{len(rules)}", "expr": expr})
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
