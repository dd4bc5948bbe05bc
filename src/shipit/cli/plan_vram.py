"""``shipit plan vram``: does a model fit a GPU, and where the memory goes.

Thin: flags to a ``capacity.VramQuery``, ``capacity.answer_vram`` (as the web console), a
table of the budget or JSON.
"""

from __future__ import annotations

import typer
from rich.console import Console

from shipit import capacity as cap
from shipit.capacity.records import GIB
from shipit.cli.plan_common import (
    DtypeOpt,
    GpuOpt,
    KvOpt,
    MaxLenOpt,
    ModelOpt,
    OutOpt,
    TpOpt,
    emit,
    kv_table,
    run,
)
from shipit.engine.model_files import resolve_model

HELP = (
    "Does the model fit? Weights, KV bytes per token, activation peak (grows with "
    "--max-num-batched-tokens), overheads, the KV pool and the sequences it holds; "
    "and what to change when it does not fit.\n\n"
    "Examples:\n\n"
    "  shipit plan vram --model llama-3.1-8b --gpu H100\n\n"
    "  shipit plan vram -m llama-3.1-70b -g a100-80gb --tp 2 --kv-dtype fp8 "
    "--max-model-len 32768\n\n"
    "  shipit plan vram -m ./my-model/config.json -g l4 --dtype int4-awq -o json"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("vram", help=HELP)(vram)


def _gib(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


def vram(
    model: str = ModelOpt,
    gpu: str = GpuOpt,
    tp: int = TpOpt,
    dtype: str | None = DtypeOpt,
    kv_dtype: str = KvOpt,
    max_model_len: int | None = MaxLenOpt,
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="vLLM --max-num-seqs."),
    max_num_batched_tokens: int = typer.Option(
        8192, "--max-num-batched-tokens", help="Tokens per iteration; sets the activation peak."
    ),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization"),
    context: int | None = typer.Option(
        None, "--context", help="Tokens per sequence for the concurrency figure (default: max)."
    ),
    output: str = OutOpt,
) -> None:
    catalog = cap.load_catalog()
    m = run(lambda: resolve_model(catalog, model))
    q = run(
        lambda: cap.VramQuery(
            gpu=gpu,
            tp=tp,
            dtype=dtype,
            kv_dtype=kv_dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            context=context,
        )
    )
    d, p = run(lambda: cap.answer_vram(catalog, m, q))  # the console asks the same question

    def render(c: Console) -> None:
        rows = [
            ("GPU memory (per GPU)", _gib(p.gpu_total_bytes)),
            (f"budget x {d.gpu_memory_utilization:g}", _gib(p.budget_bytes)),
            (f"weights ({p.dtype}, /{p.tp})", _gib(p.weight_bytes)),
            (f"activation peak ({d.max_num_batched_tokens} tokens)", _gib(p.activation_peak_bytes)),
            ("non-torch (CUDA context, NCCL)", _gib(p.non_torch_bytes)),
            ("CUDA graphs", _gib(p.cuda_graph_bytes)),
            ("KV pool", _gib(p.kv_pool_bytes)),
            ("KV bytes/token (model, all ranks)", f"{p.kv_bytes_per_token_total:,.0f}"),
            ("KV bytes/token (per GPU)", f"{p.kv_bytes_per_token:,.0f}"),
            ("KV pool tokens", f"{p.kv_pool_tokens:,}"),
            (f"sequences of {p.context_tokens} tokens", f"{p.max_concurrent_seqs:,}"),
        ]
        c.print(kv_table(f"VRAM: {d.label()}", rows))
        c.print(("[green]" if p.fits else "[red]") + p.reason)
        for s in p.suggestions:
            c.print(f"  try {s}")

    emit(output, p, render)
