"""``shipit replica``: serve one model over the OpenAI API (the embedded engine, or a simulated
accelerator), with vLLM's metrics and LoRA admin endpoints and graceful drain on SIGTERM.

Thin: parse the flags into ``ReplicaSettings``, call ``shipit.replica.server.serve``, exit with
its code. Everything else lives in ``shipit.replica``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from shipit.core.errors import InvalidRequestError, ShipitError
from shipit.core.replica_admin import ADMIN_TOKEN_ENV
from shipit.engine.model_names import DEFAULT_MODEL
from shipit.replica.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_PROMPT_CHARS,
    MIB,
    LoraSpec,
    ReplicaSettings,
)


def register(app: typer.Typer) -> None:
    app.command(
        "replica",
        help=(
            "Serve a model over the OpenAI API (completions, chat, SSE streaming), with vLLM's "
            "metrics at /metrics, LoRA admin, a KV-event feed, and graceful drain on SIGTERM.\n\n"
            "Examples:\n\n"
            "  shipit replica --port 8000\n\n"
            "  shipit replica --model ./my-hf-dir --lora sql=./adapters/sql --max-num-seqs 8\n\n"
            "  shipit replica --simulate H100:llama-3.1-70b:tp4 --port 9001\n\n"
            f"Admin routes need a bearer token ({ADMIN_TOKEN_ENV} or --admin-token-file); "
            "`shipit up` sets one for the replicas it starts."
        ),
    )(replica)


def _admin_token(path: Path | None) -> str | None:
    """The admin token: from ``--admin-token-file``, else the environment; never a flag value."""
    if path is None:
        return os.environ.get(ADMIN_TOKEN_ENV) or None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"--admin-token-file {path}: cannot read it ({type(exc).__name__}); point it at a "
            "readable text file holding the token",
            field="admin_token",
        ) from None
    if not token:
        raise InvalidRequestError(f"--admin-token-file {path} is empty", field="admin_token")
    return token


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
    admin_token_file: Path | None = typer.Option(
        None,
        "--admin-token-file",
        help=f"File holding the bearer token admin routes require (LoRA load/unload, KV "
        f"events, startup report). Default: the {ADMIN_TOKEN_ENV} environment variable. "
        "Never pass the token itself on the command line.",
    ),
    allow_unauthenticated_admin: bool = typer.Option(
        False,
        "--allow-unauthenticated-admin",
        help="Serve admin routes without a token when none is set (only with a loopback --host).",
    ),
    enable_lora_loading: bool = typer.Option(
        False,
        "--enable-lora-loading",
        help="Allow POST /v1/load_lora_adapter (admin token required), from --lora-root dirs.",
    ),
    lora_root: list[str] = typer.Option(
        [], "--lora-root", help="A directory adapters may be loaded from at run time (repeatable)."
    ),
    max_body_bytes: int = typer.Option(
        DEFAULT_MAX_BODY_BYTES, "--max-body-bytes", help="Larger request bodies get 413."
    ),
    max_messages: int = typer.Option(
        DEFAULT_MAX_MESSAGES, "--max-messages", help="Chats with more messages get 400."
    ),
    max_prompt_chars: int = typer.Option(
        DEFAULT_MAX_PROMPT_CHARS,
        "--max-prompt-chars",
        help="Prompts (or all messages' text) longer than this get 400.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    command_started_unix_s = time.time()  # the cold start's `imports` phase begins here
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    from shipit.replica.server import serve  # the server stack loads only for this command
    from shipit.replica.startup import StartupTimes

    try:
        if model is None:
            if simulate:
                from shipit.engine.simulated import SimulationSpec  # the planner: only here

                model = SimulationSpec.parse(simulate).model
            else:
                model = DEFAULT_MODEL
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
            admin_token=_admin_token(admin_token_file),
            allow_unauthenticated_admin=allow_unauthenticated_admin,
            enable_lora_loading=enable_lora_loading,
            lora_roots=tuple(lora_root),
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            max_prompt_chars=max_prompt_chars,
        )
    except ShipitError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    startup = StartupTimes(command_started_unix_s=command_started_unix_s)
    code = serve(settings, startup=startup, log_level=log_level.lower(), access_log=False)
    raise typer.Exit(code)
