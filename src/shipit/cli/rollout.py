"""``shipit rollout start|status|promote|abort|history``: drive a running gateway's rollouts.

Thin: each subcommand calls one admin route under ``/shipit/rollouts`` of the gateway at
``--url`` and prints the answer as a Rich table (phase, traffic split, the last decision's
reason and the analysis figures) or as-is with ``--output json``. It computes nothing itself.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shipit.cli.keys import api_key_headers

DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    name="rollout",
    help="Roll a deployment out to a new version: blue-green, canary with automatic "
    "analysis and rollback, or shadow traffic with a diff report.\n\nExamples:\n\n"
    "  shipit rollout start v2 --simulate H100:llama-3.1-8b --replicas 2\n\n"
    "  shipit rollout start v2 --strategy blue_green --keep-old-s 120\n\n"
    "  shipit rollout start v2 --strategy shadow --shadow-percent 20\n\n"
    "  shipit rollout start v2 --steps 1,10,50 --bake-s 120 --replica-arg=--max-num-seqs "
    "--replica-arg=16\n\n"
    "  shipit rollout status\n\n  shipit rollout promote\n\n  shipit rollout abort\n\n"
    "  shipit rollout history --output json\n\n"
    "A gateway that requires API keys needs an admin key in $SHIPIT_API_KEY.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="rollout")


URL = typer.Option(DEFAULT_URL, "--url", help="The gateway (shipit up) to talk to.")
OUTPUT = typer.Option("table", "--output", "-o", help="table or json.")
DEPLOYMENT = typer.Option(None, "--deployment", "-d", help="Default: the first deployment.")


def _call(method: str, url: str, path: str, payload: object | None = None) -> Any:
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + "/shipit/rollouts" + path,
            json=payload,
            timeout=30.0,
            headers=api_key_headers(),
        )
    except httpx.HTTPError as exc:
        Console(stderr=True).print(
            f"[red]error:[/] cannot reach the gateway at {url} ({exc}); is `shipit up` "
            "running there? Pass --url"
        )
        raise typer.Exit(2) from exc
    data = response.json()
    if response.status_code >= 400:
        message = data.get("error", {}).get("message", response.text)
        Console(stderr=True).print(f"[red]error:[/] {message}")
        raise typer.Exit(1)
    return data


def _split(r: dict[str, Any]) -> str:
    cand = r["candidate_percent"]
    return f"{r['baseline']} {100 - cand:g} % / {r['candidate']['name']} {cand:g} %"


def _figure(value: float, latency: bool) -> str:
    return f"{value * 1e3:.1f} ms" if latency else f"{value:.2%}"


def _render(rollouts: list[dict[str, Any]], console: Console) -> None:
    if not rollouts:
        console.print("no rollouts")
        return
    for r in rollouts:
        table = Table(
            title=f"rollout of {r['deployment']}: {r['baseline']} -> {r['candidate']['name']} "
            f"({r['strategy']})",
            title_justify="left",
        )
        table.add_column("field")
        table.add_column("value")
        table.add_row("phase", r["phase"])
        if r["strategy"] == "canary":
            table.add_row("step", f"{r['step']} of {len(r['steps_percent'])} {r['steps_percent']}")
        table.add_row("traffic", _split(r))
        table.add_row("last decision", f"{r['reason_code']}: {r['reason']}")
        if r.get("shadow"):
            table.add_row("shadow report", r["shadow"]["reason"])
        console.print(table)
        analysis = r.get("analysis")
        if analysis:
            checks = Table(title="last analysis", title_justify="left")
            for col in ("metric", "verdict", "candidate", "baseline", "effect", "p", "n"):
                checks.add_column(col)
            for c in analysis["checks"]:
                latency = c["metric"] in ("ttft", "tpot")
                p = "-" if c["p_value"] is None else f"{c['p_value']:.2g}"
                checks.add_row(
                    c["metric"],
                    c["verdict"],
                    _figure(c["candidate"], latency),
                    _figure(c["baseline"], latency),
                    f"{c['effect']:+.1%}",
                    p,
                    f"{c['n_candidate']}/{c['n_baseline']}",
                )
            console.print(checks)
        events = Table(title="events", title_justify="left")
        for col in ("code", "candidate %", "reason"):
            events.add_column(col)
        for e in r.get("events", [])[-12:]:
            events.add_row(e["code"], f"{e['candidate_percent']:g}", e["reason"])
        console.print(events)


def _print(data: Any, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    rollouts = data.get("rollouts", [data])
    _render(rollouts, Console())


@app.command("start")
def start(
    version: str = typer.Argument(
        ..., help="The new version's name (from rollout.versions, or new)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Its model (default: the deployment's)."
    ),
    simulate: str | None = typer.Option(
        None, "--simulate", help="Its simulated accelerator GPU:MODEL."
    ),
    replica_arg: list[str] = typer.Option(
        [], "--replica-arg", help="A replica flag for it (repeatable)."
    ),
    replicas: int | None = typer.Option(None, "--replicas", "-n", help="How many replicas of it."),
    strategy: str | None = typer.Option(None, "--strategy", help="canary, blue_green or shadow."),
    steps: str | None = typer.Option(
        None, "--steps", help="Canary shares in percent, e.g. 1,5,25,50."
    ),
    bake_s: float | None = typer.Option(None, "--bake-s", help="Time at each step (s)."),
    keep_old_s: float | None = typer.Option(
        None, "--keep-old-s", help="Keep the old version this long after the switch (s)."
    ),
    shadow_percent: float | None = typer.Option(
        None, "--shadow-percent", help="shadow: the share of requests mirrored (percent)."
    ),
    manual: bool = typer.Option(
        False, "--manual", help="Wait for `shipit rollout promote` after the last step."
    ),
    deployment: str | None = DEPLOYMENT,
    url: str = URL,
    output: str = OUTPUT,
) -> None:
    """Start a rollout to VERSION."""  # fmt: skip
    payload: dict[str, Any] = {"version": version, "deployment": deployment, "model": model,
                               "simulate": simulate, "replicas": replicas, "strategy": strategy,
                               "bake_s": bake_s, "keep_old_s": keep_old_s,
                               "shadow_percent": shadow_percent}  # fmt: skip
    if replica_arg:
        payload["replica_args"] = replica_arg
    if manual:
        payload["auto_promote"] = False
    if steps is not None:
        try:
            payload["steps_percent"] = [float(s) for s in steps.split(",") if s.strip()]
        except ValueError as exc:
            Console(stderr=True).print(
                f"[red]error:[/] --steps {steps!r}: give percents separated by commas, "
                "e.g. 1,5,25,50"
            )
            raise typer.Exit(2) from exc
    _print(_call("POST", url, "", {k: v for k, v in payload.items() if v is not None}), output)


@app.command("status")
def status(url: str = URL, output: str = OUTPUT) -> None:
    """Every deployment's rollout: phase, traffic split, last decision and analysis."""
    _print(_call("GET", url, ""), output)


@app.command("promote")
def promote(deployment: str | None = DEPLOYMENT, url: str = URL, output: str = OUTPUT) -> None:
    """Move all traffic to the candidate now (the old version is kept keep_old_s)."""
    name = deployment or _first(url)
    _print(_call("POST", url, f"/{name}/promote"), output)


@app.command("abort")
def abort(deployment: str | None = DEPLOYMENT, url: str = URL, output: str = OUTPUT) -> None:
    """Roll back now: all traffic to the baseline, the candidate stopped."""
    name = deployment or _first(url)
    _print(_call("POST", url, f"/{name}/abort"), output)


@app.command("history")
def history(url: str = URL, output: str = OUTPUT) -> None:
    """Finished rollouts and how each ended."""
    _print(_call("GET", url, "/history"), output)


def _first(url: str) -> str:
    rollouts = _call("GET", url, "")["rollouts"]
    active = [r for r in rollouts if r["phase"] not in ("complete", "rolled_back")]
    if not active:
        Console(stderr=True).print("[red]error:[/] no rollout in progress")
        raise typer.Exit(1)
    name: str = active[0]["deployment"]
    return name
