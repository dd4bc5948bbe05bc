"""``shipit replica``: serve one model over the OpenAI API (the embedded engine, or a simulated
accelerator), with vLLM's metrics and LoRA admin endpoints and graceful drain on SIGTERM.

Thin: parse the flags into ``ReplicaSettings``, call ``shipit.replica.server.serve``, exit with
its code. Everything else lives in ``shipit.replica``.
"""

from __future__ import annotations

import logging

import typer

from shipit.core.errors import ShipitError
from shipit.engine.loader import DEFAULT_MODEL
from shipit.engine.simulated import SimulationSpec
from shipit.replica.settings import MIB, LoraSpec, ReplicaSettings


def register(app: typer.Typer) -> None:
    app.command(
        "replica",
        help=(
            "Serve a model over the OpenAI API (completions, chat, SSE streaming), with vLLM's "
            "metrics at /metrics, LoRA admin, a KV-event feed, and graceful drain on SIGTERM.\n\n"
            "Examples:\n\n"
            "  shipit replica --port 8000\n\n"
            "  shipit replica --model ./my-hf-dir --lora sql=./adapters/sql --max-num-seqs 8\n\n"
            "  shipit replica --simulate H100:llama-3.1-70b:tp4 --port 9001"
        ),
    )(replica)


def replica(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help=f"Model name, HF directory or .gguf file (default {DEFAULT_MODEL}; with "
        "--simulate, the simulated model's name).",
    ),
    port: int = typer.Option(8000, "--port", help="TCP port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", help="Name clients use as `model` (default: --model)."
    ),
    max_num_seqs: int = typer.Option(32, "--max-num-seqs", help="Most sequences per step."),
    max_num_batched_tokens: int = typer.Option(
        512, "--max-num-batched-tokens", help="Token budget of one step."
    ),
    kv_cache_mib: int = typer.Option(
        512, "--kv-cache-mib", help="KV cache size in MiB (ignored with --simulate)."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Context length cap (default: the model's)."
    ),
    max_waiting: int = typer.Option(
        1024, "--max-waiting", help="Waiting requests beyond this get 429."
    ),
    max_loras: int = typer.Option(4, "--max-loras", help="LoRA adapters held at once."),
    lora: list[str] = typer.Option([], "--lora", help="Load an adapter: NAME=PATH (repeatable)."),
    simulate: str | None = typer.Option(
        None, "--simulate", help="Simulate an accelerator: GPU:MODEL[:tpN], e.g. H100:llama-3.1-8b."
    ),
    drain_timeout_s: float = typer.Option(
        30.0, "--drain-timeout-s", help="On SIGTERM, wait this long for in-flight requests."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    from shipit.replica.server import serve  # the server stack loads only for this command

    try:
        if model is None:
            model = SimulationSpec.parse(simulate).model if simulate else DEFAULT_MODEL
        settings = ReplicaSettings(
            model=model,
            served_model_name=served_model_name,
            host=host,
            port=port,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            kv_cache_bytes=kv_cache_mib * MIB,
            max_model_len=max_model_len,
            max_waiting=max_waiting,
            max_loras=max_loras,
            loras=tuple(LoraSpec.parse(s) for s in lora),
            simulate=simulate,
            drain_timeout_s=drain_timeout_s,
        )
    except ShipitError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    code = serve(settings, log_level=log_level.lower(), access_log=False)
    raise typer.Exit(code)
