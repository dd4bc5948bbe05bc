"""``shipit status``: what a running gateway is doing, from its ``GET /shipit/status``.

Thin: fetch the JSON, then print it as Rich tables for people (deployments, replicas and their
states, the last scale decisions with reasons, cold starts in phases) or as-is with
``--output json`` for machines. It must not compute anything the gateway did not report.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

DECISIONS_SHOWN = 10


def register(app: typer.Typer) -> None:
    app.command(
        "status",
        help="Deployments, replicas, recent scale decisions and cold starts of a running "
        "gateway.\n\nExamples:\n\n  shipit status\n\n"
        "  shipit status --url http://10.0.0.5:8000 --output json\n\n"
        "A gateway that requires API keys needs an admin key in $SHIPIT_API_KEY.",
    )(status)


def fetch(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    from shipit.cli.keys import api_key_headers

    response = httpx.get(
        url.rstrip("/") + "/shipit/status", timeout=timeout_s, headers=api_key_headers()
    )
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def _ago(unix_s: float | None, now_unix_s: float) -> str:
    return "-" if unix_s is None else f"{max(now_unix_s - unix_s, 0.0):.0f}s ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _bounds(a: dict[str, Any]) -> str:
    if not a:
        return "external"
    if a.get("fixed") or a["min_replicas"] == a["max_replicas"]:
        return f"fixed {a['min_replicas']}"
    return f"{a['min_replicas']}..{a['max_replicas']}"


def deployments_table(data: dict[str, Any]) -> Table:
    uptime = data.get("uptime_s")
    title = "deployments" + ("" if uptime is None else f" (gateway up {_duration(uptime)})")
    table = Table(title=title, title_justify="left")
    for col in ("deployment", "model", "replicas", "desired", "bounds", "queue", "now"):
        table.add_column(col)
    for d in data["deployments"]:
        a = d.get("autoscaling") or {}
        states: dict[str, int] = {}
        for r in d["replicas"]:
            states[r["state"]] = states.get(r["state"], 0) + 1
        table.add_row(
            d["name"],
            d["model"],
            ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "0",
            str(a.get("desired", "-")),
            _bounds(a),
            str(d["queue_depth"]),
            ("PANIC " if a.get("panic") else "") + str(a.get("reason") or ""),
        )
    return table


def replicas_table(data: dict[str, Any]) -> Table:
    table = Table(title="replicas", title_justify="left")
    for col in ("deployment", "replica", "state", "for", "in flight", "url"):
        table.add_column(col)
    for d in data["deployments"]:
        for r in d["replicas"]:
            since = r.get("state_for_s")
            table.add_row(
                d["name"],
                r["id"],
                r["state"],
                "-" if since is None else f"{since:.0f}s",
                str(r["in_flight"]),
                r["url"],
            )
    return table


def decisions_table(data: dict[str, Any], now_unix_s: float) -> Table:
    table = Table(title="scale decisions (newest first)", title_justify="left")
    for col in ("deployment", "when", "from", "to", "started", "stopping", "reason"):
        table.add_column(col)
    for d in data["deployments"]:
        for e in ((d.get("autoscaling") or {}).get("decisions") or [])[:DECISIONS_SHOWN]:
            table.add_row(
                d["name"],
                _ago(e["at_unix_s"], now_unix_s),
                str(e["current"]),
                str(e["target"]),
                ", ".join(e["started"]),
                ", ".join([*e["stopping"], *e["replaced"]]),
                e["reason"],
            )
    return table


def cold_starts_table(data: dict[str, Any], now_unix_s: float) -> Table:
    table = Table(title="cold starts (newest first)", title_justify="left")
    for col in ("deployment", "replica", "when", "total", "phases", "weights"):
        table.add_column(col)
    for d in data["deployments"]:
        for c in ((d.get("autoscaling") or {}).get("cold_starts") or [])[:DECISIONS_SHOWN]:
            phases = "  ".join(f"{k} {v:.2f}s" for k, v in c["phases_s"].items())
            table.add_row(
                d["name"],
                c["replica_id"],
                _ago(c["at_unix_s"], now_unix_s),
                f"{c['total_s']:.2f}s",
                phases,
                c.get("weights_source") or "-",
            )
    return table


def alerts_table(data: dict[str, Any], now_unix_s: float) -> Table:
    """Baseline-deviation alerts the gateway has raised (``/shipit/status``'s ``alerts``)."""
    alerts = data.get("alerts") or []
    table = Table(title=f"alerts ({len(alerts)} active)", title_justify="left")
    for col in ("deployment", "metric", "since", "value", "baseline", "score", "reason"):
        table.add_column(col)
    for a in alerts:
        base = a.get("baseline")
        table.add_row(
            a["deployment"],
            a["metric"],
            _ago(a.get("since_s"), now_unix_s),
            f"{a['value']:.4g}",
            "-" if base is None else f"{base:.4g}",
            f"{a['score']:.1f}",
            a.get("reason") or "",
        )
    return table


def status(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The gateway's base URL."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
) -> None:
    if output not in ("table", "json"):
        typer.echo(f"error: --output must be 'table' or 'json', got {output!r}", err=True)
        raise typer.Exit(2)
    try:
        data = fetch(url)
    except (httpx.HTTPError, ValueError) as exc:
        typer.echo(
            f"error: cannot read {url}/shipit/status: {exc}; is `shipit up` running?", err=True
        )
        raise typer.Exit(1) from exc
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console(width=160)
    now = time.time()
    for table in (
        deployments_table(data),
        replicas_table(data),
        decisions_table(data, now),
        cold_starts_table(data, now),
        alerts_table(data, now),
    ):
        console.print(table)
