"""``shipit bench``: load an OpenAI-compatible endpoint, report, plot, compare, self-check.

Thin: parses options into a ``BenchConfig``, calls ``shipit.bench``, renders with Rich (progress
bar, summary table, comparison table). All measuring lives in ``shipit.bench``; this module
must not compute a metric.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipit.core.errors import ShipitError

EXAMPLES = """
Examples:

  # 200 requests, Poisson arrivals at 5 req/s, SLO-based goodput, JSON + plots
  shipit bench --url http://127.0.0.1:8000 --model m --num-requests 200 --rate 5 \\
      --slo ttft_p99_ms=500,tpot_p99_ms=50 --result-json out/run.json --plots out/

  # closed loop, sweep 1, 4 and 16 sessions in flight; lognormal prompts, fixed replies
  shipit bench --url http://127.0.0.1:8000/v1 --model m --concurrency 1,4,16 \\
      --input-tokens lognormal:512,0.6 --output-tokens 128

  # bursty load (gamma, burstiness 0.3), 8 shared prefixes of 256 tokens, 3-turn chats, LoRA mix
  shipit bench --url URL --model base --rate 2,4,8 --arrival gamma --burstiness 0.3 \\
      --prefix-groups 8 --prefix-tokens 256 --turns 3 --lora-mix sql=0.3,chat=0.2

  # replay a trace twice as fast; a ShareGPT file instead of synthetic prompts
  shipit bench --url URL --model m --trace trace.csv --trace-speed 2
  shipit bench --url URL --model m --sharegpt ShareGPT_V3.json --rate 4

  shipit bench compare before.json after.json
  shipit bench self-check          # this machine's ceiling as a load generator
"""

app = typer.Typer(
    help="Load-test any OpenAI-compatible endpoint: TTFT, TPOT, ITL, E2E, goodput.\n" + EXAMPLES,
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")


class _Bar:
    """A ProgressSink on a Rich progress bar (one task per load point)."""

    def __init__(self, progress: Progress, label: str) -> None:
        self._progress = progress
        self._task = progress.add_task(label, total=None, in_flight=0, errors=0)

    def update(self, *, done: int, total: int, in_flight: int, errors: int) -> None:
        self._progress.update(
            self._task, completed=done, total=total, in_flight=in_flight, errors=errors
        )


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


_ROWS: tuple[tuple[str, str, str | None, int], ...] = (
    ("req/s", "request_throughput_rps", None, 2),
    ("output tok/s", "output_throughput_tok_s", None, 1),
    ("goodput req/s", "goodput_rps", None, 2),
    ("TTFT P50 ms", "ttft_ms", "p50", 1),
    ("TTFT P90 ms", "ttft_ms", "p90", 1),
    ("TTFT P99 ms", "ttft_ms", "p99", 1),
    ("TPOT P50 ms", "tpot_ms", "p50", 2),
    ("TPOT P90 ms", "tpot_ms", "p90", 2),
    ("TPOT P99 ms", "tpot_ms", "p99", 2),
    ("ITL P50 ms", "itl_ms", "p50", 2),
    ("ITL P99 ms", "itl_ms", "p99", 2),
    ("E2E P50 ms", "e2e_ms", "p50", 1),
    ("E2E P99 ms", "e2e_ms", "p99", 1),
    ("send lag P99 ms", "send_lag_ms", "p99", 2),
)


def summary_table(result: dict[str, Any]) -> Table:
    """One column per load point, one row per metric (fits a terminal for a sweep)."""
    points = result["points"]
    table = Table(title=f"shipit bench: {result['config']['target']['model']}")
    table.add_column("metric")
    for point in points:
        table.add_column(f"{point['mode']} {point['value']:g}", justify="right")
    table.add_row(
        "ok / sent", *(f"{p['summary']['completed']}/{p['summary']['requests']}" for p in points)
    )
    for label, key, sub, digits in _ROWS:
        cells = []
        for point in points:
            value = point["summary"][key]
            cells.append(_num(value.get(sub) if sub and value else value, digits))
        table.add_row(label, *cells)
    table.add_row(
        "errors",
        *(
            ", ".join(f"{k}: {v}" for k, v in p["summary"]["errors_by_kind"].items()) or "-"
            for p in points
        ),
    )
    table.add_row("tokens from", *(p["summary"]["tokens_source"] for p in points))
    return table


def _run(cfg: Any, quiet: bool) -> dict[str, Any]:
    from shipit.bench.api import run_bench

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("in flight {task.fields[in_flight]}  errors {task.fields[errors]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as progress:
        return asyncio.run(run_bench(cfg, lambda label: _Bar(progress, label)))


@app.callback()
def bench(
    ctx: typer.Context,
    url: str = typer.Option(
        None, help="Base URL (http://host:port or .../v1) or full endpoint URL."
    ),
    model: str = typer.Option(None, help="Model name sent in every request."),
    api_key: str = typer.Option(
        None, envvar="OPENAI_API_KEY", help="Bearer token (or $OPENAI_API_KEY)."
    ),
    endpoint: str = typer.Option("chat", help="chat (/v1/chat/completions) or completions."),
    protocol: str = typer.Option(
        "sse",
        help="sse (HTTP, streamed) | http (HTTP, one JSON answer: TTFT = E2E) | ws (/v1/ws) | "
        "grpc (--url host:port of the gateway's --grpc-port).",
    ),
    num_requests: int = typer.Option(100, help="Requests per load point."),
    rate: str = typer.Option(None, help="Open loop: requests/s; a list (1,2,4) sweeps."),
    concurrency: str = typer.Option(
        None, help="Closed loop: sessions in flight; a list sweeps. Default 1."
    ),
    arrival: str = typer.Option("poisson", help="constant | poisson | gamma (with --rate)."),
    burstiness: float = typer.Option(1.0, help="Gamma shape: 1 = Poisson, <1 burstier."),
    input_tokens: str = typer.Option("128", help="N | uniform:LO,HI | lognormal:MEDIAN,SIGMA"),
    output_tokens: str = typer.Option("128", help="max_tokens, same forms as --input-tokens."),
    prefix_groups: int = typer.Option(0, help="Shared-prefix groups (each request picks one)."),
    prefix_tokens: int = typer.Option(0, help="Tokens of each shared prefix."),
    turns: int = typer.Option(1, help="Turns per session (later turns carry the history)."),
    think_time_s: float = typer.Option(0.0, help="Pause between turns of a session."),
    lora_mix: str = typer.Option("", help="Adapter shares, e.g. sql=0.3,chat=0.2; rest: --model."),
    sharegpt: str = typer.Option(None, help="ShareGPT JSON file to take prompts from."),
    trace: str = typer.Option(
        None, help="CSV: timestamp,input_tokens,output_tokens[,prefix_group,adapter]."
    ),
    trace_speed: float = typer.Option(1.0, help="Replay the trace this many times faster."),
    slo: str = typer.Option("", help="e.g. ttft_p99_ms=500,tpot_p99_ms=50 (sets goodput)."),
    ignore_eos: bool = typer.Option(False, help="Send ignore_eos (vLLM/SGLang) for exact lengths."),
    tokenizer: str = typer.Option(
        None,
        help="tokenizer.json or a model directory: counts output tokens when the server "
        "sends no usage (else streamed chunks are counted).",
    ),
    warmup: int = typer.Option(1, help="Unmeasured requests sent first."),
    timeout_s: float = typer.Option(600.0, help="Per-request timeout."),
    seed: int = typer.Option(0, help="Seed for lengths, prompts and arrivals."),
    result_json: str = typer.Option(None, help="Write the full result (all requests) here."),
    plots: str = typer.Option(None, help="Write PNG plots into this directory."),
    output: str = typer.Option("table", help="table | json (the result document on stdout)."),
) -> None:
    """Run a load test (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    if not url or not model:
        raise _fail("--url and --model are required (see `shipit bench --help` for examples)")
    from shipit.bench.config import BenchConfig, parse_number_list, parse_slo

    try:
        cfg = BenchConfig.model_validate(
            {
                "target": {
                    "url": url,
                    "model": model,
                    "endpoint": endpoint,
                    "protocol": protocol,
                    "api_key": api_key,
                    "ignore_eos": ignore_eos,
                    "timeout_s": timeout_s,
                    "tokenizer": tokenizer,
                },
                "workload": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "prefix_groups": prefix_groups,
                    "prefix_tokens": prefix_tokens,
                    "turns": turns,
                    "think_time_s": think_time_s,
                    "lora_mix": lora_mix,
                    "sharegpt_path": sharegpt,
                    "trace_path": trace,
                    "trace_speed": trace_speed,
                },
                "load": {
                    "num_requests": num_requests,
                    "arrival": arrival,
                    "burstiness": burstiness,
                    "warmup_requests": warmup,
                    "rates_rps": parse_number_list(rate, field="rate") if rate else (),
                    "concurrencies": tuple(
                        int(c) for c in parse_number_list(concurrency, field="concurrency")
                    )
                    if concurrency
                    else (),
                },
                "slo_ms": parse_slo(slo),
                "seed": seed,
            }
        )
        result = _run(cfg, quiet=output == "json")
    except ValidationError as exc:
        raise _fail(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from exc
    except ShipitError as exc:
        raise _fail(exc.message) from exc
    _emit(result, result_json=result_json, plots=plots, output=output)


def _emit(
    result: dict[str, Any], *, result_json: str | None, plots: str | None, output: str
) -> None:
    from shipit.bench.report import write_result

    console = Console()
    if output == "json":
        typer.echo(json.dumps(result))
    else:
        console.print(summary_table(result))
        for note in result["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")
    if result_json:
        Console(stderr=True).print(f"result: {write_result(result, result_json)}")
    if plots:
        from shipit.bench.plots import write_plots

        for path in write_plots(result, plots):
            Console(stderr=True).print(f"plot: {path}")


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="Baseline result JSON."),
    b: str = typer.Argument(..., help="Candidate result JSON."),
) -> None:
    """Compare two result files metric by metric (B against A, points matched in order)."""
    from shipit.bench.report import compare, load_result

    try:
        rows = compare(load_result(a), load_result(b))
    except ShipitError as exc:
        raise _fail(exc.message) from exc
    table = Table(title=f"{os.path.basename(a)} -> {os.path.basename(b)}")  # noqa: PTH119
    for col in ("point", "metric", "A", "B", "change"):
        table.add_column(col, justify="right")
    for row in rows:
        delta = row.delta_pct
        colour = {True: "green", False: "red", None: "white"}[row.improved]
        table.add_row(
            str(row.point),
            row.metric,
            "-" if row.a is None else f"{row.a:.2f}",
            "-" if row.b is None else f"{row.b:.2f}",
            "-" if delta is None else f"[{colour}]{delta:+.1f}%[/{colour}]",
        )
    Console().print(table)


@app.command("self-check")
def self_check(
    seconds_per_step: float = typer.Option(2.0, help="Length of each load step."),
    output: str = typer.Option("table", help="table | json"),
) -> None:
    """Measure this machine's ceiling as a load generator against an instant local server."""
    from dataclasses import asdict

    from shipit.bench.selfcheck import measure_ceiling

    console = Console(stderr=True)
    ceiling = measure_ceiling(
        seconds_per_step=seconds_per_step,
        on_step=lambda s: console.print(
            f"{s.kind} {s.target:g}: sent {s.achieved_rps:.0f}/s, generator CPU "
            f"{s.generator_cpu:.0%}, {'ok' if s.sustained else 'NOT sustained'}"
        ),
    )
    if output == "json":
        typer.echo(json.dumps(asdict(ceiling)))
        return
    Console().print(
        f"generator ceiling on one core: {ceiling.max_rate_rps:g} requests/s (16-token streams), "
        f"{ceiling.max_streams} concurrent streams at {1e3 / ceiling.stream_itl_ms:g} tokens/s each"
    )
