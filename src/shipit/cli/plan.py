"""``shipit plan``: capacity planning from the terminal (vram, perf, recommend, replicas, cost,
procure).

This module owns the ``plan`` command group and its help; each subcommand lives in its own
module (``plan_vram``, ``plan_perf``, ``plan_recommend``, ``plan_replicas``, ``plan_cost``,
``plan_procure``), shared flags and output helpers in ``plan_common``. Thin: parse flags,
call ``shipit.capacity`` (the same functions the library and the simulator use), render a Rich
table or ``--output json``. No planning logic lives here.
"""

from __future__ import annotations

import typer

from shipit.cli import plan_cost, plan_perf, plan_procure, plan_recommend, plan_replicas, plan_vram

plan_app = typer.Typer(
    name="plan",
    help=(
        "Capacity planner: VRAM budget, performance, hardware recommendation, replicas and "
        "autoscaling from SLOs, cost per million tokens, procurement (reserved / on-demand / "
        "spot).\n\n"
        "Models: catalog ids (llama-3.1-8b), Hugging Face names "
        "(meta-llama/Llama-3.1-8B-Instruct) or a local config.json path. "
        "GPUs: h100-sxm (alias H100), h200, b200, a100-80gb, a100-40gb, l40s, l4, a10g, mi300x.\n\n"
        "Every command takes --output json."
    ),
    no_args_is_help=True,
)

for _command in (plan_vram, plan_perf, plan_recommend, plan_replicas, plan_cost, plan_procure):
    _command.register(plan_app)


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")
