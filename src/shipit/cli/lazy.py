"""The root command group of ``shipit``: commands listed from a table, imported when run.

The root lists the commands from ``COMMANDS`` (names, modules, one-line helps) and imports a
command's module only when that command is invoked, so ``shipit --help`` imports no numpy,
aiohttp, uvicorn or engine code. A test checks the table against each module's own help.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# name -> (module with ``register(app)``, one-line help shown by ``shipit --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": (
        "shipit.cli.generate",
        "Generate text with the embedded CPU engine, streaming tokens as they come.",
    ),
    "replica": (
        "shipit.cli.replica",
        "Serve a model over the OpenAI API (completions, chat, SSE streaming), with vLLM's "
        "metrics at /metrics, LoRA admin, a KV-event feed, and graceful drain on SIGTERM.",
    ),
    "up": ("shipit.cli.up", "Start the gateway and its replicas (OpenAI-compatible on --port)."),
    "status": (
        "shipit.cli.status",
        "Deployments, replicas, recent scale decisions and cold starts of a running gateway.",
    ),
    "top": ("shipit.cli.top", "Live view of a running shipit."),
    "keys": ("shipit.cli.keys", "Manage the gateway's API keys and tenants."),
    "rollout": (
        "shipit.cli.rollout",
        "Roll a deployment out to a new version: blue-green, canary with automatic analysis "
        "and rollback, or shadow traffic with a diff report.",
    ),
    "jobs": (
        "shipit.cli.jobs",
        "Run batch files through a gateway (OpenAI's Batch API): submit, status, cancel, results.",
    ),
    "render": (
        "shipit.cli.render",
        "Render deployment files from a shipit.yaml (Kubernetes manifests).",
    ),
    "build": (
        "shipit.cli.build",
        "Write Dockerfiles for the gateway and the replica images (embedded engine on slim "
        "Python, vLLM and SGLang on their official images), uv-locked, non-root, with a "
        "HEALTHCHECK and no weights inside; --build builds them with docker, podman or buildah.",
    ),
    "sim": (
        "shipit.cli.sim",
        "The fleet simulator: the live policies in simulated time, on simulated GPUs.",
    ),
    "bench": (
        "shipit.cli.bench",
        "Load-test any OpenAI-compatible endpoint: TTFT, TPOT, ITL, E2E, goodput.",
    ),
    "console": (
        "shipit.cli.console",
        "Serve the web console's VRAM calculator and model-to-hardware recommender in a browser.",
    ),
    "plan": (
        "shipit.cli.plan",
        "Capacity planner: VRAM budget, performance, hardware recommendation, replicas and "
        "autoscaling from SLOs, cost per million tokens.",
    ),
}


def load_command(name: str) -> Any:
    """The click command ``name`` as its module registers it (imports that module)."""
    module = importlib.import_module(COMMANDS[name][0])
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    module.register(sub)
    group = typer.main.get_group(sub)
    return group.commands[name]


class LazyGroup(TyperGroup):
    """Commands come from ``COMMANDS``; listing them for help imports none of them."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            short = COMMANDS[cmd_name][1]
            return TyperCommand(cmd_name, help=short, short_help=short)
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
