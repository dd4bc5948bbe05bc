"""The ``shipit`` command: builds the Typer app from one module per command.

Each command module exposes ``register(app)``; this module only wires them together so
importing one command never imports the others' heavy dependencies at start-up.
"""

from __future__ import annotations

import typer

from shipit import __version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipit {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="shipit",
        help="Take an LLM from one box to production traffic.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """shipit: gateway, routing, autoscaling, capacity planning and an embedded CPU engine."""

    from shipit.cli import generate

    generate.register(app)
    from shipit.cli import replica

    replica.register(app)
    from shipit.cli import bench

    bench.register(app)
    from shipit.cli import plan

    plan.register(app)
    from shipit.cli import up

    up.register(app)
    from shipit.cli import keys

    keys.register(app)
    from shipit.cli import status

    status.register(app)
    from shipit.cli import top

    top.register(app)
    return app


def main() -> None:
    build_app()()
