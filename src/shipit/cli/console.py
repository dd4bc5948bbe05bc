"""``shipit console``: the web console's calculators alone, with no gateway and no fleet.

Thin: binds the address, builds ``console.ConsoleApp`` without a fleet source (its fleet page
says where the fleet view lives) and serves it with uvicorn until Ctrl-C. The planner pages
call the same ``shipit.capacity`` code as ``shipit plan``.
"""

from __future__ import annotations

import asyncio
import contextlib

import typer
from rich.console import Console

HELP = (
    "Serve the web console's VRAM calculator and model-to-hardware recommender in a browser, "
    "without a fleet (the fleet page is served by `shipit up` at /ui/fleet).\n\n"
    "Examples:\n\n"
    "  shipit console                 # http://127.0.0.1:8090/ui/\n\n"
    "  shipit console --port 9000\n\n"
    "  shipit console --host 0.0.0.0  # reachable from other machines: no keys are checked"
)


def register(app: typer.Typer) -> None:
    app.command("console", help=HELP)(console)


def console(
    port: int = typer.Option(8090, "--port", min=0, max=65535, help="Port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
) -> None:
    import uvicorn

    from shipit.config.security import is_loopback
    from shipit.console import ConsoleApp
    from shipit.gateway.server import bind_socket

    err = Console(stderr=True)
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        err.print(
            f"[red]error:[/] cannot listen on {host}:{port}: {exc}; pick another --port "
            "(or 0 for any free one)"
        )
        raise typer.Exit(2) from exc
    bound = sock.getsockname()[1]
    err.print(f"[bold]shipit console[/] at http://{host}:{bound}/ui/  (Ctrl-C stops it)")
    if not is_loopback(host):
        err.print(
            f"[yellow]warning:[/] {host} is reachable from other machines and this console "
            "checks no API keys; its planner answers anyone who can reach the port"
        )
    config = uvicorn.Config(ConsoleApp(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn has already shut down cleanly
        asyncio.run(server.serve(sockets=[sock]))
