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
        grid = panel["gridPos"]
        if panel["type"] == "row":
            assert grid == {"h": 1, "w": 24, "x": 0, "y": grid["y"]} and panel["title"]
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= set(variables), (panel["title"], used)


def _exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


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


def test_panels_do_not_overlap() -> None:
    for name, board in BOARDS.items():
        taken: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            g = panel["gridPos"]
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                     for y in range(g["y"], g["y"] + g["h"])}  # fmt: skip
            assert not cells & taken, (name, panel["title"])
            taken |= cells


def test_the_fleet_dashboard_has_a_rollouts_row_of_rollout_panels() -> None:
    panels = BOARDS["shipit-fleet.json"]["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    assert [panels[i]["title"] for i in rows] == ["Rollouts"]
    below = panels[rows[0] + 1 :]
    assert [p["title"] for p in below] == [
        "Rollout traffic share per version",
        "Rollout step and phase",
        "Rollout decisions",
        "Rollout analysis: TTFT / TPOT median per version",
    ]
    assert all(p["gridPos"]["y"] > panels[rows[0]]["gridPos"]["y"] for p in below)
    exprs = " ".join(t["expr"] for p in below for t in p["targets"])
    for spec in (cat.ROLLOUT_TRAFFIC, cat.ROLLOUT_STEP, cat.ROLLOUT_STATE,
                 cat.ROLLOUT_DECISIONS_TOTAL, cat.ROLLOUT_WINDOW_MEDIAN):  # fmt: skip
        assert f"{spec.name}{{{dashboards.DEP}}}" in exprs, spec.name
    # Only the rollout row reads rollout series.
    above = " ".join(t["expr"] for p in panels[: rows[0]] for t in p["targets"])
    assert "shipit_rollout_" not in above


def test_main_writes_the_files(tmp_path: Path) -> None:
    assert dashboards.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BOARDS)
    assert dashboards.main([]) == 2
