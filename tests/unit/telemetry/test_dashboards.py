"""Grafana dashboards: checked in equal to the generator, valid structure, catalog-only PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shipit.telemetry import catalog as cat
from shipit.telemetry import dashboards, rules
from shipit.telemetry.promql import selected_names

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
BOARDS = {name: json.loads(text) for name, text in dashboards.render().items()}


def test_checked_in_dashboards_equal_the_rendered_ones() -> None:
    for name, text in dashboards.render().items():
        assert (DEPLOY / name).read_text() == text, (
            f"deploy/grafana/{name} is stale; run: "
            "uv run python -m shipit.telemetry.dashboards deploy/grafana"
        )


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_structure_grafana_imports(name: str) -> None:
    board = BOARDS[name]
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= set(variables), (panel["title"], used)


def _exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_query_reads_only_catalog_metrics_or_recording_rules(name: str) -> None:
    known = set(cat.series_names()) | rules.recorded_names()
    for title, expr in _exprs(BOARDS[name]):
        names = selected_names(expr)
        assert names, (title, expr)
        assert names <= known, (title, names - known)


def test_the_dashboards_show_what_the_issue_asks_for() -> None:
    slo = " ".join(e for _, e in _exprs(BOARDS["shipit-slo.json"]))
    for spec in (cat.TTFT, cat.TPOT, cat.E2E):
        for q in ("0.5", "0.9", "0.99"):
            assert (
                f"histogram_quantile({q}, sum by (deployment, le) (rate({spec.name}_bucket" in slo
            )
    assert cat.GOOD_REQUESTS.name in slo and 'status=~"5..|429"' in slo
    fleet = " ".join(e for _, e in _exprs(BOARDS["shipit-fleet.json"]))
    for spec in (cat.REPLICAS, cat.QUEUE_DEPTH, cat.VLLM_KV_USAGE, cat.VLLM_PREFIX_HITS,
                 cat.COLD_START, cat.ACCEL_UTIL, cat.PROCESS_RSS):  # fmt: skip
        assert spec.name in fleet, spec.name
    cost = " ".join(e for _, e in _exprs(BOARDS["shipit-cost.json"]))
    assert cat.COST_PER_HOUR.name in cost and cat.COST_PER_MTOK.name in cost


def test_main_writes_the_files(tmp_path: Path) -> None:
    assert dashboards.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BOARDS)
    assert dashboards.main([]) == 2
