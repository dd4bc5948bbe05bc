"""Shared pieces of the ``shipit plan`` subcommands: flag definitions, error and output helpers.

Owns how a plan command fails (a red one-line error and exit code 2, from a ``ShipitError`` or a
pydantic ``ValidationError``), how a result is written (a Rich table, or ``--output json`` of the
result records) and the flags several subcommands share. No planning logic and no command here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shipit import capacity as cap
from shipit.core.errors import ShipitError
from shipit.core.jsonable import jsonable as jsonable  # the planner commands' JSON form
from shipit.engine.model_files import resolve_model

_T = TypeVar("_T")

ModelOpt = typer.Option(..., "--model", "-m", help="Catalog id, HF name or config.json path.")
GpuOpt = typer.Option(..., "--gpu", "-g", help="GPU id or alias, e.g. h100-sxm, H100, l4.")
TpOpt = typer.Option(1, "--tp", help="Tensor-parallel degree (GPUs per replica).")
DtypeOpt = typer.Option(
    None, "--dtype", help="bf16|fp8|int8|int4-awq|gguf-q4_k_m|mxfp4|nvfp4 (default: native)."
)
KvOpt = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto|bf16|fp8.")
OutOpt = typer.Option("table", "--output", "-o", help="table or json.")
MaxLenOpt = typer.Option(None, "--max-model-len", help="Context limit (default: model max).")


def fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


def run(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except ShipitError as exc:
        raise fail(exc.message) from exc
    except ValidationError as exc:
        raise fail(cap.explain_invalid(exc).message) from exc


def emit(output: str, payload: Any, render: Callable[[Console], None]) -> None:
    if output == "json":
        typer.echo(json.dumps(jsonable(payload), indent=2))
        return
    if output != "table":
        raise fail(f"--output {output!r} is not known; use table or json")
    render(Console(width=120))


def deployment(catalog: cap.Catalog, model: str, gpu: str, **kw: Any) -> cap.Deployment:
    return run(
        lambda: cap.Deployment(model=resolve_model(catalog, model), gpu=catalog.gpu(gpu), **kw)
    )


def kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t


def traffic_profile(**kw: Any) -> cap.TrafficProfile:
    return run(lambda: cap.TrafficProfile(**kw))


def slo_targets(ttft_ms: float, tpot_ms: float, percentile: float) -> cap.SloTargets:
    return run(lambda: cap.SloTargets(ttft_ms=ttft_ms, tpot_ms=tpot_ms, percentile=percentile))


def split_csv(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())
