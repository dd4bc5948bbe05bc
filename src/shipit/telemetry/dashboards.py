"""Grafana dashboards (SLO overview, fleet with a "Rollouts" row, cost) generated as JSON.

Owns the panels, their PromQL and their layout. Every query is built from a ``MetricSpec`` or a
recording rule of ``telemetry.rules``, so panels cannot drift from what shipit exposes. The JSON
is Grafana's dashboard model (schemaVersion 39, Grafana 10+), with a ``datasource`` variable so
one file imports against any Prometheus. It must not talk to Grafana or read files except in
``write_dashboards`` and ``main``. Regenerate with::

    uv run python -m shipit.telemetry.dashboards deploy/grafana
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipit.telemetry import catalog as cat
from shipit.telemetry import rules
from shipit.telemetry.generated import regenerate_main, write_files

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DEP = 'deployment=~"$deployment"'
MODEL = 'model_name=~"$model_name"'
RI = "$__rate_interval"
SCHEMA_VERSION = 39


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str
    description: str = ""
    kind: str = "timeseries"
    stacked: bool = False


def _q(expr: str, legend: str = "{{deployment}}") -> Query:
    return Query(expr, legend)


def quantiles(spec: cat.MetricSpec, by: str = "deployment", matcher: str = DEP) -> list[Query]:
    """P50/P90/P99 of a histogram per ``by``, with ``histogram_quantile`` over its buckets."""
    buckets = f"sum by ({by}, le) (rate({spec.name}_bucket{{{matcher}}}[{RI}]))"
    return [
        _q(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)} {{{{{by}}}}}")
        for q in rules.QUANTILES
    ]


def _rate(spec: cat.MetricSpec, by: str = "deployment", matcher: str = DEP) -> str:
    return f"sum by ({by}) (rate({spec.name}{{{matcher}}}[{RI}]))"


def slo_panels() -> list[Panel]:
    req = cat.REQUESTS.name
    errors = (
        f'sum by (deployment) (rate({req}{{{DEP},status=~"{rules.ERROR_STATUS_REGEX}"}}[{RI}]))'
    )
    valid = f'sum by (deployment) (rate({req}{{{DEP},status=~"{rules.VALID_STATUS_REGEX}"}}[{RI}]))'
    ok = f'sum by (deployment) (rate({req}{{{DEP},status=~"2.."}}[{RI}]))'
    targets = rules.RuleTargets()
    err_budget = round(1.0 - targets.availability_objective, 10)
    ttft_budget = round(1.0 - targets.ttft_objective, 10)
    return [
        Panel("TTFT P50 / P90 / P99", tuple(quantiles(cat.TTFT)), "s", cat.TTFT.help),
        Panel("TPOT P50 / P90 / P99", tuple(quantiles(cat.TPOT)), "s", cat.TPOT.help),
        Panel("E2E latency P50 / P90 / P99", tuple(quantiles(cat.E2E)), "s", cat.E2E.help),
        Panel(
            "Error rate",
            (_q(f"({errors} or {valid} * 0) / {valid}"),),
            "percentunit",
            "5xx and 429 over valid requests (4xx other than 429 excluded).",
        ),
        Panel(
            "Throughput",
            (_q(_rate(cat.REQUESTS), "req/s {{deployment}}"),),
            "reqps",
            "Answered requests per second, every status.",
        ),
        Panel(
            "Output tokens per second",
            (_q(_rate(cat.OUTPUT_TOKENS), "tok/s {{deployment}}"),),
            "short",
            cat.OUTPUT_TOKENS.help,
        ),
        Panel(
            "Goodput",
            (
                _q(_rate(cat.GOOD_REQUESTS), "goodput req/s {{deployment}}"),
                _q(f"{_rate(cat.GOOD_REQUESTS)} / {ok}", "fraction of 2xx {{deployment}}"),
            ),
            "reqps",
            "Completed requests per second that met every SLO.",
        ),
        Panel(
            "Error-budget burn rate (1h)",
            (
                _q(
                    f"{rules.error_ratio_name('1h')}{{{DEP}}} / {err_budget:g}",
                    "errors {{deployment}}",
                ),
                _q(
                    f"{rules.ttft_slow_ratio_name('1h')}{{{DEP}}} / {ttft_budget:g}",
                    "TTFT {{deployment}}",
                ),
            ),
            "x",
            "1 spends the 30-day budget exactly; the fast page fires above 14.4 (recording "
            "rules from deploy/prometheus must be loaded).",
        ),
    ]


def _fleet_serving_panels() -> list[Panel]:
    prefix = (
        f"sum by (model_name) (rate({cat.VLLM_PREFIX_HITS.name}{{{MODEL}}}[{RI}])) / "
        f"sum by (model_name) (rate({cat.VLLM_PREFIX_QUERIES.name}{{{MODEL}}}[{RI}]))"
    )
    ready = f'sum by (deployment) ({cat.REPLICAS.name}{{{DEP},state="ready"}})'
    return [
        Panel(
            "Replicas by state",
            (_q(f"sum by (state) ({cat.REPLICAS.name}{{{DEP}}})", "{{state}}"),),
            "short",
            cat.REPLICAS.help,
            stacked=True,
        ),
        Panel(
            "Desired vs ready replicas",
            (
                _q(
                    f"max by (deployment) ({cat.REPLICAS_DESIRED.name}{{{DEP}}})",
                    "desired {{deployment}}",
                ),
                _q(ready, "ready {{deployment}}"),
            ),
            "short",
            cat.REPLICAS_DESIRED.help,
        ),
        Panel(
            "Queue depth",
            (_q(f"sum by (deployment) ({cat.QUEUE_DEPTH.name}{{{DEP}}})"),),
            "short",
            cat.QUEUE_DEPTH.help,
        ),
        Panel(
            "Queue wait P50 / P90 / P99", tuple(quantiles(cat.QUEUE_WAIT)), "s", cat.QUEUE_WAIT.help
        ),
        Panel(
            "In flight per replica",
            (_q(f"{cat.REPLICA_IN_FLIGHT.name}{{{DEP}}}", "{{replica}}"),),
            "short",
            cat.REPLICA_IN_FLIGHT.help,
        ),
        Panel(
            "Replica batch: running / waiting",
            (
                _q(f"{cat.VLLM_RUNNING.name}{{{MODEL}}}", "running {{instance}}"),
                _q(f"{cat.VLLM_WAITING.name}{{{MODEL}}}", "waiting {{instance}}"),
            ),
            "short",
            "vLLM-named engine gauges from every replica.",
        ),
        Panel(
            "KV-cache usage",
            (_q(f"{cat.VLLM_KV_USAGE.name}{{{MODEL}}}", "{{instance}}"),),
            "percentunit",
            cat.VLLM_KV_USAGE.help,
        ),
        Panel(
            "Prefix-cache hit rate",
            (_q(prefix, "{{model_name}}"),),
            "percentunit",
            "Hit tokens over queried tokens.",
        ),
    ]


def _fleet_lifecycle_panels() -> list[Panel]:
    return [
        Panel(
            "Preemptions per second",
            (_q(_rate(cat.VLLM_PREEMPTIONS, "model_name", MODEL), "{{model_name}}"),),
            "short",
            cat.VLLM_PREEMPTIONS.help,
        ),
        Panel(
            "Cold start P50 / P90 (all phases)",
            tuple(quantiles(cat.COLD_START)[:2]),
            "s",
            cat.COLD_START.help,
        ),
        Panel(
            "Cold start P90 by phase",
            (quantiles(cat.COLD_START_PHASE, by="phase")[1],),
            "s",
            cat.COLD_START_PHASE.help,
        ),
        Panel(
            "Scale events",
            (
                _q(
                    f"sum by (deployment, direction) (increase({cat.SCALE_EVENTS.name}{{{DEP}}}"
                    f"[{RI}]))",
                    "{{direction}} {{deployment}}",
                ),
            ),
            "short",
            cat.SCALE_EVENTS.help,
        ),
        Panel(
            "Accelerator utilisation",
            (_q(cat.ACCEL_UTIL.name, "{{instance}} gpu{{gpu}}"),),
            "percentunit",
            "NVML; empty on hosts without a GPU.",
        ),
        Panel(
            "Accelerator memory used / total",
            (
                _q(cat.ACCEL_MEM_USED.name, "used {{instance}} gpu{{gpu}}"),
                _q(cat.ACCEL_MEM_TOTAL.name, "total {{instance}} gpu{{gpu}}"),
            ),
            "bytes",
            "NVML; empty on hosts without a GPU.",
        ),
        Panel(
            "Process CPU",
            (_q(f"rate({cat.PROCESS_CPU.name}[{RI}])", "{{component}} {{instance}}"),),
            "percentunit",
            "CPU seconds per second (1 = one core).",
        ),
        Panel(
            "Process resident memory",
            (_q(cat.PROCESS_RSS.name, "{{component}} {{instance}}"),),
            "bytes",
            cat.PROCESS_RSS.help,
        ),
        Panel(
            "Baseline-deviation alerts",
            (_q(f"{cat.ALERT_ACTIVE.name}{{{DEP}}} == 1", "{{deployment}} {{metric}}"),),
            "short",
            cat.ALERT_ACTIVE.help,
        ),
    ]


def fleet_panels() -> list[Panel]:
    return _fleet_serving_panels() + _fleet_lifecycle_panels()


def cost_panels() -> list[Panel]:
    return [
        Panel(
            "Spend per hour",
            (_q(f"sum by (deployment) ({cat.COST_PER_HOUR.name}{{{DEP}}})"),),
            "currencyUSD",
            cat.COST_PER_HOUR.help,
            stacked=True,
        ),
        Panel(
            "Total spend per hour",
            (_q(f"sum({cat.COST_PER_HOUR.name}{{{DEP}}})", "total"),),
            "currencyUSD",
            "Sum over the selected deployments.",
            kind="stat",
        ),
        Panel(
            "Cost per million output tokens",
            (
                _q(f"{cat.COST_PER_MTOK.name}{{{DEP}}}", "reported {{deployment}}"),
                _q(f"{rules.COST_PER_MTOK}{{{DEP}}}", "measured 1h {{deployment}}"),
            ),
            "currencyUSD",
            "Reported: the gateway's estimate. Measured: spend per hour over output tokens in "
            "the last hour (recording rule).",
        ),
        Panel(
            "Output tokens per second",
            (_q(_rate(cat.OUTPUT_TOKENS), "tok/s {{deployment}}"),),
            "short",
            cat.OUTPUT_TOKENS.help,
        ),
    ]


def rollout_panels() -> list[Panel]:
    """The "Rollouts" row: traffic split, phase and step, decisions, analysis medians."""
    state = f"({cat.ROLLOUT_STATE.name}{{{DEP}}} == 1)"
    step = f"max by (deployment) ({cat.ROLLOUT_STEP.name}{{{DEP}}})"
    decisions = cat.ROLLOUT_DECISIONS_TOTAL.name
    return [
        Panel(
            "Rollout traffic share per version",
            (_q(f"{cat.ROLLOUT_TRAFFIC.name}{{{DEP}}}", "{{deployment}} {{version}}"),),
            "percentunit",
            cat.ROLLOUT_TRAFFIC.help,
        ),
        Panel(
            "Rollout step and phase",
            (
                _q(
                    f"{step} * on (deployment) group_left (state) {state}",
                    "{{deployment}} ({{state}})",
                ),
            ),
            "short",
            "Canary step (0 outside canary); the legend names the phase.",
        ),
        Panel(
            "Rollout decisions",
            (
                _q(
                    f"sum by (deployment, decision, reason) (increase({decisions}{{{DEP}}}[{RI}]))"
                    " > 0",
                    "{{deployment}} {{decision}} ({{reason}})",
                ),
            ),
            "short",
            cat.ROLLOUT_DECISIONS_TOTAL.help,
        ),
        Panel(
            "Rollout analysis: TTFT / TPOT median per version",
            (
                _q(
                    f"{cat.ROLLOUT_WINDOW_MEDIAN.name}{{{DEP}}}",
                    "{{metric}} {{version}} {{deployment}}",
                ),
            ),
            "s",
            cat.ROLLOUT_WINDOW_MEDIAN.help,
        ),
    ]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int, width: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend,
            "range": True,
        }
        for i, q in enumerate(panel.queries)
    ]
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.kind == "timeseries":
        stacking = {"mode": "normal" if panel.stacked else "none", "group": "A"}
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 10, "stacking": stacking}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _layout(panels: list[Panel], first_id: int, y: int, columns: int) -> list[dict[str, Any]]:
    width = 24 // columns
    return [
        _panel_json(p, first_id + i, (i % columns) * width, y + (i // columns) * 8, width)
        for i, p in enumerate(panels)
    ]


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    *,
    columns: int = 2,
    rows: tuple[tuple[str, list[Panel]], ...] = (),
) -> dict[str, Any]:
    """A Grafana dashboard laying ``panels`` out in ``columns`` equal columns, then each of
    ``rows`` (title, panels) under a row header of its own."""
    laid_out = _layout(panels, 1, 0, columns)
    y = -(-len(panels) // columns) * 8
    for row_title, row_panels in rows:
        row_id = len(laid_out) + 1
        laid_out.append({"id": row_id, "type": "row", "title": row_title, "collapsed": False,
                         "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        laid_out += _layout(row_panels, row_id + 1, y + 1, columns)
        y += 1 + -(-len(row_panels) // columns) * 8
    datasource_var = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
    }
    return {
        "uid": uid,
        "title": title,
        "tags": ["shipit", "generated"],
        "description": "Generated by shipit.telemetry.dashboards from the metric catalog.",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                datasource_var,
                _variable(
                    "deployment", "Deployment", f"label_values({cat.REQUESTS.name}, deployment)"
                ),
                _variable(
                    "model_name",
                    "Model (replicas)",
                    f"label_values({cat.VLLM_RUNNING.name}, model_name)",
                ),
            ]
        },
        "panels": laid_out,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard under ``deploy/grafana``."""
    boards = {
        "shipit-slo.json": dashboard("shipit-slo", "shipit / SLO overview", slo_panels()),
        "shipit-fleet.json": dashboard(
            "shipit-fleet", "shipit / Fleet", fleet_panels(), rows=(("Rollouts", rollout_panels()),)
        ),
        "shipit-cost.json": dashboard("shipit-cost", "shipit / Cost", cost_panels()),
    }
    return {name: json.dumps(board, indent=2) + "\n" for name, board in boards.items()}


def write_dashboards(directory: Path) -> list[Path]:
    return write_files(directory, render())


def main(argv: list[str] | None = None) -> int:
    return regenerate_main(argv, "shipit.telemetry.dashboards", write_dashboards)


if __name__ == "__main__":
    raise SystemExit(main())
