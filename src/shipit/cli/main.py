"""The ``shipit`` command: the root group, its ``--version``, and ``main``.

Each command module exposes ``register(app)`` and is imported only when its command runs
(``shipit.cli.lazy``); ``shipit --version`` answers before importing anything else, so every
call no longer pays for numpy, aiohttp, uvicorn and the engine.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from shipit import __version__

if TYPE_CHECKING:
    import typer


def _version(value: bool) -> None:
    if value:
        import typer

        typer.echo(f"shipit {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    import typer

    from shipit.cli.lazy import LazyGroup

    app = typer.Typer(
        name="shipit",
        cls=LazyGroup,
        rich_markup_mode=None,  # plain help: rich's help renderer alone costs more than 0.3 s
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

    return app


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(f"shipit {__version__}")
        return
    build_app()()
