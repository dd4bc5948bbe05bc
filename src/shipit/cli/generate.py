"""``shipit generate``: run the embedded engine on one prompt and stream tokens to the terminal.

Thin: parse the flags, load the model, call the engine, print. Model loading and
generation are the same functions the replica server uses.
"""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console

from shipit.core.errors import ShipitError
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import DEFAULT_MODEL, load_model
from shipit.engine.sampling import SamplingParams


def register(app: typer.Typer) -> None:
    app.command(
        "generate",
        help=(
            "Generate text with the embedded CPU engine, streaming tokens as they come.\n\n"
            "Examples:\n\n"
            '  shipit generate --chat --temperature 0 "What is the capital of France?"\n\n'
            '  shipit generate --model ./my-hf-dir --max-tokens 64 "Once upon a time"\n\n'
            '  shipit generate --lora sql=./adapters/sql --chat "List all users"'
        ),
    )(generate)


def generate(
    prompt: str = typer.Argument(..., help="The prompt (a user message with --chat)."),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        "-m",
        help="Model name, a Hugging Face-style directory, or a .gguf file.",
    ),
    chat: bool = typer.Option(
        False, "--chat", help="Wrap the prompt in the model's chat template."
    ),
    system: str | None = typer.Option(None, "--system", help="System message (with --chat)."),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Most tokens to generate."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 is greedy (argmax)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k likeliest; 0 = off."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    lora: str | None = typer.Option(None, "--lora", help="Apply a PEFT LoRA adapter: NAME=PATH."),
    stats: bool = typer.Option(True, "--stats/--no-stats", help="Print timing to stderr."),
) -> None:
    err = Console(stderr=True)
    try:
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=tuple(stop),
        )
        t0 = time.perf_counter()
        with err.status(f"loading {model} ..."):
            loaded = load_model(model, progress=lambda msg: err.print(f"[dim]{msg}[/dim]"))
        load_s = time.perf_counter() - t0
        engine = LLMEngine.from_loaded(loaded, EngineConfig(max_num_seqs=1))
        lora_name = _load_lora(engine, lora) if lora else None
        text = prompt
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        engine.add_request("cli", text, params, lora_name=lora_name)
    except ShipitError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    _stream(engine, err, load_s=load_s, show_stats=stats)


def _load_lora(engine: LLMEngine, spec: str) -> str:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ShipitError(f"--lora expects NAME=PATH, got {spec!r}", field="lora")
    engine.load_lora(name, path)
    return name


def _stream(engine: LLMEngine, err: Console, *, load_s: float, show_stats: bool) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    n_out = 0
    reason = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if first is None:
                first = time.perf_counter()
            sys.stdout.write(out.new_text)
            sys.stdout.flush()
            n_out = out.num_output_tokens
            reason = out.finish_reason
    sys.stdout.write("\n")
    end = time.perf_counter()
    if show_stats and first is not None:
        decode_s = end - first
        rate = (n_out - 1) / decode_s if n_out > 1 and decode_s > 0 else 0.0
        err.print(
            f"[dim]{n_out} tokens ({reason}) · load {load_s:.2f} s · "
            f"TTFT {1000 * (first - t0):.0f} ms · {rate:.1f} tokens/s[/dim]"
        )
