"""``shipit top``: a live terminal view of a running shipit, refreshed every ``--interval-s``.

Thin: scrape the gateway's ``/metrics`` (parsed with ``prometheus_client.parser``) and
``/shipit/status``, and each replica's ``/metrics`` (KV usage, prefix hits, running/waiting,
which the gateway does not aggregate); ``top_frame`` computes the figures from two successive
scrapes and renders Rich tables. ``--once`` takes two scrapes ``--interval-s`` apart, prints
one frame and exits. It must not compute anything itself beyond fetching.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from rich.live import Live

from shipit.cli.top_frame import Scrape, build_frame, render

EXAMPLES = """
Examples:

  shipit top
  shipit top --url http://10.0.0.5:8000 --interval-s 2
  shipit top --once            # one frame (two scrapes --interval-s apart), then exit
"""


def register(app: typer.Typer) -> None:
    app.command("top", help="Live view of a running shipit.\n" + EXAMPLES)(top)


def _samples(text: str) -> tuple[Sample, ...]:
    return tuple(s for fam in text_string_to_metric_families(text) for s in fam.samples)


def _replica_base(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1")


def scrape(client: httpx.Client, url: str, *, replicas: bool) -> Scrape:
    from shipit.cli.keys import api_key_headers

    base, auth = url.rstrip("/"), api_key_headers()  # to the gateway only, never to replicas
    status: dict[str, Any] = (
        client.get(base + "/shipit/status", headers=auth).raise_for_status().json()
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
    replica_metrics: bool = typer.Option(
        True, "--replica-metrics/--no-replica-metrics", help="Also scrape each replica."
    ),
) -> None:
    console = Console()
    with httpx.Client(timeout=min(5.0, max(interval_s, 1.0))) as client:
        try:
            prev = scrape(client, url, replicas=replica_metrics)
        except httpx.HTTPError as exc:
            console.print(f"[red]error:[/] cannot read {url}: {exc}; is `shipit up` running?")
            raise typer.Exit(1) from exc
        if once:
            time.sleep(interval_s)
            cur = scrape(client, url, replicas=replica_metrics)
            console.print(render(build_frame(url, cur, prev)))
            return
        with Live(render(build_frame(url, prev, None)), console=console, screen=False) as live:
            try:
                while True:
                    time.sleep(interval_s)
                    try:
                        cur = scrape(client, url, replicas=replica_metrics)
                    except httpx.HTTPError as exc:
                        live.console.print(f"[yellow]scrape failed:[/] {exc}")
                        continue
                    live.update(render(build_frame(url, cur, prev)))
                    prev = cur
            except KeyboardInterrupt:
                pass
