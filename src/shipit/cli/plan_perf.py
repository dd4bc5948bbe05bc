"""``shipit plan perf``: TTFT, TPOT and throughput of one replica from the roofline model.

Thin: flags to a ``Deployment``, ``capacity.estimate_perf``, a table or JSON.
"""

from __future__ import annotations

import typer
from rich.console import Console

from shipit import capacity as cap
from shipit.cli.plan_common import (
    DtypeOpt,
    GpuOpt,
    KvOpt,
    MaxLenOpt,
    ModelOpt,
    OutOpt,
    TpOpt,
    deployment,
    emit,
    kv_table,
    run,
)

HELP = (
    "TTFT, TPOT and tokens/s of one replica from a roofline model (memory-bound decode, "
    "compute-bound prefill, TP all-reduce), calibrated on published runs.\n\n"
    "Examples:\n\n"
    "  shipit plan perf -m llama-3.1-8b -g h100 --input-len 1000 --output-len 200\n\n"
    "  shipit plan perf -m llama-3.1-70b -g h200 --tp 4 --dtype fp8 --input-len 2048 "
    "--output-len 256 --concurrency 32 -o json"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("perf", help=HELP)(perf)


def _perf_rows(e: cap.PerfEstimate) -> list[tuple[str, str]]:
    return [
        ("concurrency (max the KV pool holds)", f"{e.concurrency} ({e.max_concurrency})"),
        ("TTFT", f"{e.ttft_ms:,.1f} ms"),
        ("TPOT", f"{e.tpot_ms:,.2f} ms"),
        ("E2E", f"{e.e2e_ms:,.0f} ms"),
        ("decode iteration", f"{e.decode_step_ms:,.2f} ms"),
        ("output tokens/s per replica", f"{e.output_tokens_per_s:,.0f}"),
        ("output tokens/s per GPU", f"{e.output_tokens_per_s_per_gpu:,.0f}"),
        ("requests/s per replica", f"{e.requests_per_s:,.2f}"),
        ("bound", e.bound),
    ]


def perf(
    model: str = ModelOpt,
    gpu: str = GpuOpt,
    tp: int = TpOpt,
    dtype: str | None = DtypeOpt,
    kv_dtype: str = KvOpt,
    max_model_len: int | None = MaxLenOpt,
    input_len: int = typer.Option(..., "--input-len", help="Prompt tokens."),
    output_len: int = typer.Option(..., "--output-len", help="Generated tokens."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="Requests in flight (default: as many as fit)."
    ),
    prefix_hit_rate: float = typer.Option(0.0, "--prefix-hit-rate", help="Cached prompt share."),
    output: str = OutOpt,
) -> None:
    catalog = cap.load_catalog()
    d = deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=max_model_len or input_len + output_len,
    )
    e = run(
        lambda: cap.estimate_perf(
            d,
            input_len=input_len,
            output_len=output_len,
            concurrency=concurrency,
            prefix_hit_rate=prefix_hit_rate,
        )
    )

    def render(c: Console) -> None:
        c.print(
            kv_table(f"Performance: {e.label}, {input_len} in / {output_len} out", _perf_rows(e))
        )
        c.print(e.reason, highlight=False)

    emit(output, e, render)
