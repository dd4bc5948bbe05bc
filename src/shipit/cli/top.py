"""``shipit top``: a live terminal view of a running shipit, refreshed every ``--interval-s``.

Thin: scrape the gateway's ``/metrics`` (parsed with ``prometheus_client.parser``) and
``/shipit/status``, and each replica's ``/metrics`` (KV usage, prefix hits, running/waiting,
which the gateway does not aggregate); ``top_frame`` computes the figures and renders Rich
tables. Deployment rates come from the gateway's counter history over ``--window-s``
(``/shipit/status?window_s=``), so ``--once`` right after traffic still shows it; per-replica
rates are over the interval between two scrapes. Off a terminal the tables are as wide as
their content (or ``COLUMNS``). It must not compute anything itself beyond fetching.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from rich.live import Live

from shipit.cli.top_frame import Scrape, build_frame, render

OFF_TERMINAL_WIDTH = 250

EXAMPLES = """
Examples:

  shipit top
  shipit top --url http://10.0.0.5:8000 --interval-s 2
  shipit top --once            # one frame, then exit
  shipit top --once --window-s 60 | less -S
"""


def register(app: typer.Typer) -> None:
    app.command("top", help="Live view of a running shipit.\n" + EXAMPLES)(top)


def _samples(text: str) -> tuple[Sample, ...]:
    return tuple(s for fam in text_string_to_metric_families(text) for s in fam.samples)


def _replica_base(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1")


def console_for(*, is_terminal: bool | None = None) -> Console:
    """A terminal's own width; off a terminal (a pipe, a file, CI) ``COLUMNS`` or a width wide
    enough that no name is cut (tables are only as wide as their content)."""
    console = Console()
    if is_terminal is None:
        is_terminal = console.is_terminal
    if is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns) if columns.isdigit() else OFF_TERMINAL_WIDTH)


def scrape(
    client: httpx.Client, url: str, *, replicas: bool, window_s: float | None = None
) -> Scrape:
    from shipit.cli.keys import api_key_headers

    base, auth = url.rstrip("/"), api_key_headers()  # to the gateway only, never to replicas
    query = f"?window_s={window_s:g}" if window_s else ""
    status: dict[str, Any] = (
        client.get(base + "/shipit/status" + query, headers=auth).raise_for_status().json()
    )
    gateway = _samples(client.get(base + "/metrics", headers=auth).raise_for_status().text)
    per_replica: dict[str, tuple[Sample, ...]] = {}
    if replicas:
        for d in status.get("deployments", []):
            for r in d.get("replicas", []):
                if r.get("state") not in ("ready", "draining"):
                    continue
                try:
                    text = client.get(_replica_base(r["url"]) + "/metrics").text
                    per_replica[r["id"]] = _samples(text)
                except (httpx.HTTPError, ValueError):
                    continue  # a replica that does not answer shows dashes
    return Scrape(time.monotonic(), gateway, status, per_replica)


def top(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The gateway's base URL."),
    interval_s: float = typer.Option(1.0, "--interval-s", min=0.1, help="Refresh period (s)."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit."),
    window_s: float = typer.Option(
        10.0,
        "--window-s",
        min=1.0,
        help="Deployment rates and percentiles over this many seconds, from the gateway's "
        "counter history (not just the last --interval-s).",
    ),
    replica_metrics: bool = typer.Option(
        True, "--replica-metrics/--no-replica-metrics", help="Also scrape each replica."
    ),
) -> None:
    console = console_for()
    with httpx.Client(timeout=min(5.0, max(interval_s, 1.0))) as client:
        try:
            prev = scrape(client, url, replicas=replica_metrics, window_s=window_s)
        except httpx.HTTPError as exc:
            console.print(f"[red]error:[/] cannot read {url}: {exc}; is `shipit up` running?")
            raise typer.Exit(1) from exc
        if once:
            time.sleep(interval_s)
            cur = scrape(client, url, replicas=replica_metrics, window_s=window_s)
            console.print(render(build_frame(url, cur, prev)))
            return
        with Live(render(build_frame(url, prev, None)), console=console, screen=False) as live:
            try:
                while True:
                    time.sleep(interval_s)
                    try:
                        cur = scrape(client, url, replicas=replica_metrics, window_s=window_s)
                    except httpx.HTTPError as exc:
                        live.console.print(f"[yellow]scrape failed:[/] {exc}")
                        continue
                    live.update(render(build_frame(url, cur, prev)))
                    prev = cur
            except KeyboardInterrupt:
                pass
