"""What ``shipit up`` prints about its replicas: the table now, and again once all are ready."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.table import Table

from shipit.gateway.app import Gateway


def _table(gateway: Gateway) -> Table:
    table = Table(title="replicas", title_justify="left")
    for col in ("deployment", "replica", "url", "state", "in flight"):
        table.add_column(col)
    for d in gateway.status()["deployments"]:
        for r in d["replicas"]:
            table.add_row(d["name"], r["id"], r["url"], r["state"], str(r["in_flight"]))
    return table


async def report(gateway: Gateway, console: Console, timeout_s: float) -> None:
    """Print the replica table now and once every replica is ready (or the timeout passes)."""
    console.print(_table(gateway))
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        routers = gateway.routers.values()
        if all(r.ready_count() == len(r.registry) for r in routers):
            console.print(f"[green]all replicas ready[/] after {time.monotonic() - start:.1f}s")
            console.print(_table(gateway))
            return
        await asyncio.sleep(0.5)
    console.print("[yellow]not every replica is ready yet; requests wait in the queue[/]")
    console.print(_table(gateway))
