"""``shipit plan``: capacity planning from the terminal (vram, perf, recommend, replicas, cost).

Thin: parse flags, call ``shipit.capacity`` (the same functions the library and the simulator
use), render a Rich table or ``--output json``. No planning logic lives here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shipit import capacity as cap
from shipit.capacity.records import GIB
from shipit.core.errors import ShipitError

_T = TypeVar("_T")

plan_app = typer.Typer(
    name="plan",
    help=(
        "Capacity planner: VRAM budget, performance, hardware recommendation, replicas and "
        "autoscaling from SLOs, cost per million tokens.\n\n"
        "Models: catalog ids (llama-3.1-8b), Hugging Face names "
        "(meta-llama/Llama-3.1-8B-Instruct) or a local config.json path. "
        "GPUs: h100-sxm (alias H100), h200, b200, a100-80gb, a100-40gb, l40s, l4, a10g, mi300x.\n\n"
        "Every command takes --output json."
    ),
    no_args_is_help=True,
)

ModelOpt = typer.Option(..., "--model", "-m", help="Catalog id, HF name or config.json path.")
GpuOpt = typer.Option(..., "--gpu", "-g", help="GPU id or alias, e.g. h100-sxm, H100, l4.")
TpOpt = typer.Option(1, "--tp", help="Tensor-parallel degree (GPUs per replica).")
DtypeOpt = typer.Option(
    None, "--dtype", help="bf16|fp8|int8|int4-awq|gguf-q4_k_m|mxfp4|nvfp4 (default: native)."
)
KvOpt = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto|bf16|fp8.")
OutOpt = typer.Option("table", "--output", "-o", help="table or json.")
MaxLenOpt = typer.Option(None, "--max-model-len", help="Context limit (default: model max).")


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


def _run(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except ShipitError as exc:
        raise _fail(exc.message) from exc
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(msgs) from exc


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


def _emit(output: str, payload: Any, render: Callable[[Console], None]) -> None:
    if output == "json":
        typer.echo(json.dumps(_jsonable(payload), indent=2))
        return
    if output != "table":
        raise _fail(f"--output {output!r} is not known; use table or json")
    render(Console(width=120))


def _deployment(catalog: cap.Catalog, model: str, gpu: str, **kw: Any) -> cap.Deployment:
    return _run(lambda: cap.Deployment(model=catalog.model(model), gpu=catalog.gpu(gpu), **kw))


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t


def _gib(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


@plan_app.command(
    "vram",
    help=(
        "Does the model fit? Weights, KV bytes per token, activation peak (grows with "
        "--max-num-batched-tokens), overheads, the KV pool and the sequences it holds; "
        "and what to change when it does not fit.\n\n"
        "Examples:\n\n"
        "  shipit plan vram --model llama-3.1-8b --gpu H100\n\n"
        "  shipit plan vram -m llama-3.1-70b -g a100-80gb --tp 2 --kv-dtype fp8 "
        "--max-model-len 32768\n\n"
        "  shipit plan vram -m ./my-model/config.json -g l4 --dtype int4-awq -o json"
    ),
)
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
    d = _deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    p = _run(lambda: cap.plan_vram(d, context_tokens=context, other_gpus=catalog.gpus))

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
        c.print(_kv_table(f"VRAM: {d.label()}", rows))
        c.print(("[green]" if p.fits else "[red]") + p.reason)
        for s in p.suggestions:
            c.print(f"  try {s}")

    _emit(output, p, render)


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


@plan_app.command(
    "perf",
    help=(
        "TTFT, TPOT and tokens/s of one replica from a roofline model (memory-bound decode, "
        "compute-bound prefill, TP all-reduce), calibrated on published runs.\n\n"
        "Examples:\n\n"
        "  shipit plan perf -m llama-3.1-8b -g h100 --input-len 1000 --output-len 200\n\n"
        "  shipit plan perf -m llama-3.1-70b -g h200 --tp 4 --dtype fp8 --input-len 2048 "
        "--output-len 256 --concurrency 32 -o json"
    ),
)
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
    d = _deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=max_model_len or input_len + output_len,
    )
    e = _run(
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
            _kv_table(f"Performance: {e.label}, {input_len} in / {output_len} out", _perf_rows(e))
        )
        c.print(e.reason, highlight=False)

    _emit(output, e, render)


def _traffic(**kw: Any) -> cap.TrafficProfile:
    return _run(lambda: cap.TrafficProfile(**kw))


def _slo(ttft_ms: float, tpot_ms: float, percentile: float) -> cap.SloTargets:
    return _run(lambda: cap.SloTargets(ttft_ms=ttft_ms, tpot_ms=tpot_ms, percentile=percentile))


def _split(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


@plan_app.command(
    "recommend",
    help=(
        "Rank GPU x TP x precision x provider by dollars per million tokens at your SLO, each "
        "row with its reasoning.\n\n"
        "Examples:\n\n"
        "  shipit plan recommend -m llama-3.1-70b --rps 5 --input-len 1500 --output-len 300 "
        "--ttft-p99-ms 2000 --tpot-p99-ms 50\n\n"
        "  shipit plan recommend -m llama-3.1-8b --throughput 20000 --input-len 500 "
        "--output-len 500 --ttft-p99-ms 500 --tpot-p99-ms 30 --providers lambda,runpod "
        "--max-gpus 16 -o json"
    ),
)
def recommend_cmd(
    model: str = ModelOpt,
    rps: float | None = typer.Option(None, "--rps", help="Mean requests/s."),
    throughput: float | None = typer.Option(None, "--throughput", help="Output tokens/s."),
    input_len: int = typer.Option(..., "--input-len"),
    output_len: int = typer.Option(..., "--output-len"),
    input_len_p99: int | None = typer.Option(None, "--input-len-p99"),
    output_len_p99: int | None = typer.Option(None, "--output-len-p99"),
    ttft_p99_ms: float = typer.Option(..., "--ttft-p99-ms", help="TTFT SLO incl. queueing."),
    tpot_p99_ms: float = typer.Option(..., "--tpot-p99-ms", help="TPOT SLO."),
    providers: list[str] = typer.Option([], "--providers", help="aws,gcp,lambda,runpod."),
    max_gpus: int | None = typer.Option(None, "--max-gpus", help="Most GPUs in total."),
    dtypes: list[str] = typer.Option(["bf16,fp8,int4-awq"], "--dtypes", help="To consider."),
    top: int = typer.Option(10, "--top", help="Rows to show in the table."),
    output: str = OutOpt,
) -> None:
    if (rps is None) == (throughput is None):
        raise _fail("give exactly one of --rps or --throughput (output tokens/s)")
    mean_rps = rps if rps is not None else (throughput or 0.0) / output_len
    catalog = cap.load_catalog()
    m = _run(lambda: catalog.model(model))
    t = _traffic(
        mean_rps=mean_rps,
        input_len_mean=input_len,
        output_len_mean=output_len,
        input_len_p99=input_len_p99,
        output_len_p99=output_len_p99,
    )
    slo = _slo(ttft_p99_ms, tpot_p99_ms, 99.0)
    res = _run(
        lambda: cap.recommend(
            m,
            catalog,
            t,
            slo,
            providers=_split(providers),
            max_gpus=max_gpus,
            dtypes=_split(dtypes),
        )
    )

    def render(c: Console) -> None:
        tab = Table(
            title=f"{m.id}: {mean_rps:g} rps, {input_len}/{output_len} tokens, "
            f"p99 TTFT {ttft_p99_ms:g} ms, TPOT {tpot_p99_ms:g} ms",
            title_justify="left",
        )
        for col in ("#", "GPU", "TP", "dtype", "provider", "GPUs", "$/h", "$/M tok", "why"):
            tab.add_column(col, overflow="fold")
        for i, r in enumerate(res.rows[:top], 1):
            tab.add_row(
                str(i),
                r.gpu_id,
                str(r.tp),
                r.dtype,
                r.provider,
                str(r.gpus),
                f"{r.usd_per_hour:,.2f}",
                f"{r.usd_per_million_tokens:,.3f}",
                r.reason,
            )
        c.print(tab)
        if not res.rows:
            c.print("[red]no configuration meets the SLO; loosen it or allow more GPUs")
        c.print(f"{len(res.rows)} options, {len(res.rejected)} rejected (see -o json)")

    _emit(output, res, render)


@plan_app.command(
    "replicas",
    help=(
        "Minimum replicas and GPUs for a traffic profile at SLO percentiles, with queueing "
        "headroom (Erlang C or M/D/c) instead of averages, and the autoscaling settings it "
        "implies (concurrency target, min replicas against cold start and ramp, scale-down "
        "delay).\n\n"
        "Examples:\n\n"
        "  shipit plan replicas -m llama-3.1-8b -g h100 --mean-rps 20 --peak-rps 60 "
        "--input-len 1000 --output-len 200 --ttft-ms 800 --tpot-ms 40\n\n"
        "  shipit plan replicas -m qwen2.5-72b -g h200 --tp 2 --dtype fp8 --mean-rps 3 "
        "--arrival-cv 2 --input-len 3000 --input-len-p99 12000 --output-len 400 "
        "--ttft-ms 3000 --tpot-ms 60 --percentile 99 --queue-model md-c -o json"
    ),
)
def replicas(
    model: str = ModelOpt,
    gpu: str = GpuOpt,
    tp: int = TpOpt,
    dtype: str | None = DtypeOpt,
    kv_dtype: str = KvOpt,
    mean_rps: float = typer.Option(..., "--mean-rps"),
    peak_rps: float | None = typer.Option(None, "--peak-rps"),
    min_rps: float = typer.Option(0.0, "--min-rps", help="Trough rate (sets min replicas)."),
    arrival_cv: float = typer.Option(1.0, "--arrival-cv", help="Burstiness; 1 = Poisson."),
    input_len: int = typer.Option(..., "--input-len", help="Mean prompt tokens."),
    input_len_p99: int | None = typer.Option(None, "--input-len-p99"),
    output_len: int = typer.Option(..., "--output-len", help="Mean generated tokens."),
    output_len_p99: int | None = typer.Option(None, "--output-len-p99"),
    prefix_hit_rate: float = typer.Option(0.0, "--prefix-hit-rate"),
    ramp_rps_per_s: float | None = typer.Option(None, "--ramp-rps-per-s"),
    ttft_ms: float = typer.Option(..., "--ttft-ms", help="TTFT SLO (incl. queueing)."),
    tpot_ms: float = typer.Option(..., "--tpot-ms", help="TPOT SLO."),
    percentile: float = typer.Option(99.0, "--percentile", help="SLO percentile, e.g. 99."),
    queue_model: str = typer.Option("erlang-c", "--queue-model", help="erlang-c or md-c."),
    output: str = OutOpt,
) -> None:
    catalog = cap.load_catalog()
    t = _traffic(
        mean_rps=mean_rps,
        peak_rps=peak_rps,
        min_rps=min_rps,
        arrival_cv=arrival_cv,
        input_len_mean=input_len,
        input_len_p99=input_len_p99,
        output_len_mean=output_len,
        output_len_p99=output_len_p99,
        prefix_hit_rate=prefix_hit_rate,
        ramp_rps_per_s=ramp_rps_per_s,
    )
    m = _run(lambda: catalog.model(model))
    d = _deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=min(m.max_context, t.input_tail + t.output_tail),
    )
    p = _run(
        lambda: cap.size_replicas(d, t, _slo(ttft_ms, tpot_ms, percentile), queue_model=queue_model)
    )

    def render(c: Console) -> None:
        a = p.autoscaling
        c.print(
            _kv_table(
                f"Replicas: {p.label}",
                [
                    ("replicas at peak / mean", f"{p.replicas_peak} / {p.replicas_mean}"),
                    ("GPUs at peak / mean", f"{p.gpus_peak} / {p.gpus_mean}"),
                    ("concurrency per replica (max_num_seqs)", str(p.concurrency_per_replica)),
                    ("slot utilisation at peak", f"{p.utilization_at_peak:.0%}"),
                    (
                        f"p{p.percentile:g} TTFT service + queue",
                        f"{p.ttft_tail_ms:,.0f} + {p.queue_wait_tail_ms:,.0f} ms",
                    ),
                    (f"p{p.percentile:g} TPOT", f"{p.tpot_tail_ms:,.1f} ms"),
                    (
                        "autoscaler: target in-flight / replica",
                        str(a.target_concurrency_per_replica),
                    ),
                    ("autoscaler: min / max replicas", f"{a.min_replicas} / {a.max_replicas}"),
                    ("autoscaler: cold start (est.)", f"{a.cold_start_s:,.0f} s"),
                    (
                        "autoscaler: scale-up / scale-down delay",
                        f"{a.scale_up_delay_s:,.0f} s / {a.scale_down_delay_s:,.0f} s",
                    ),
                ],
            )
        )
        c.print(p.reason, highlight=False)
        c.print(a.reason, highlight=False)

    _emit(output, p, render)


def _price(
    catalog: cap.Catalog, gpu_id: str, provider: str | None, usd: float | None
) -> tuple[float, cap.Provider | None, str]:
    if usd is not None:
        return usd, (catalog.provider(provider) if provider else None), "given"
    quotes = catalog.prices_for(gpu_id, (provider,) if provider else ())
    if not quotes:
        known = sorted({q.gpu for q in catalog.prices})
        raise ShipitError(
            f"no catalog price for {gpu_id} at {provider or 'any provider'}; pass "
            f"--usd-per-gpu-hour, or pick a GPU with prices: {', '.join(known)}",
            field="gpu",
        )
    q = min(quotes, key=lambda x: x.usd_per_gpu_hour)
    return q.usd_per_gpu_hour, catalog.provider(q.provider), f"{q.provider} {q.region} {q.as_of}"


def _demand(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise _fail(f"--demand {text!r}: give 24 comma-separated GPU counts") from exc


@plan_app.command(
    "cost",
    help=(
        "Dollars per million input and output tokens from price, utilisation and throughput "
        "(precision changes throughput); with --demand, the reserved / on-demand / spot mix "
        "for a 24-hour curve of GPUs needed.\n\n"
        "Examples:\n\n"
        "  shipit plan cost -m llama-3.1-8b -g h100 --input-len 1000 --output-len 200 "
        "--concurrency 64 --provider lambda --utilization 0.6\n\n"
        "  shipit plan cost -m llama-3.1-70b -g h100 --tp 4 --dtype fp8 --input-len 2000 "
        "--output-len 300 --usd-per-gpu-hour 2.5 --provider aws --spot-fraction 0.3 "
        "--demand 8,8,8,8,8,8,12,16,24,32,32,32,32,32,32,32,28,24,20,16,12,8,8,8 -o json"
    ),
)
def cost(
    model: str = ModelOpt,
    gpu: str = GpuOpt,
    tp: int = TpOpt,
    dtype: str | None = DtypeOpt,
    kv_dtype: str = KvOpt,
    input_len: int = typer.Option(..., "--input-len"),
    output_len: int = typer.Option(..., "--output-len"),
    concurrency: int | None = typer.Option(None, "--concurrency"),
    provider: str | None = typer.Option(None, "--provider", help="aws, gcp, lambda, runpod."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour"),
    utilization: float = typer.Option(0.6, "--utilization", help="Average busy share, (0, 1]."),
    demand: str | None = typer.Option(None, "--demand", help="24 hourly GPU counts, a,b,..."),
    spot_fraction: float = typer.Option(0.0, "--spot-fraction", help="Above-reserve on spot."),
    output: str = OutOpt,
) -> None:
    catalog = cap.load_catalog()
    d = _deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=input_len + output_len,
    )
    e = _run(
        lambda: cap.estimate_perf(
            d, input_len=input_len, output_len=output_len, concurrency=concurrency
        )
    )
    price, prov, origin = _run(lambda: _price(catalog, d.gpu.id, provider, usd_per_gpu_hour))
    tc = _run(lambda: cap.token_cost(e, usd_per_gpu_hour=price, utilization=utilization))
    hours = _demand(demand)
    mix = None
    if hours:
        mix = _run(
            lambda: cap.procurement_mix(
                hours,
                usd_per_gpu_hour=price,
                reserved_discount=prov.reserved_1y_discount if prov else None,
                spot_discount=prov.spot_discount if prov else None,
                spot_fraction=spot_fraction,
            )
        )

    def render(c: Console) -> None:
        rows = [
            ("price per GPU-hour", f"${price:,.2f} ({origin})"),
            ("replica $/h", f"${tc.usd_per_replica_hour:,.2f}"),
            ("$/M input tokens", f"${tc.usd_per_million_input_tokens:,.4f}"),
            ("$/M output tokens", f"${tc.usd_per_million_output_tokens:,.4f}"),
            ("$/M tokens blended", f"${tc.usd_per_million_tokens_blended:,.4f}"),
        ]
        if mix is not None:
            rows += [
                ("reserved GPUs", str(mix.reserved_gpus)),
                (
                    "on-demand / spot GPU-h per day",
                    f"{mix.on_demand_gpu_hours_per_day:,.0f} / {mix.spot_gpu_hours_per_day:,.0f}",
                ),
                (
                    "$/day (all on-demand)",
                    f"${mix.usd_per_day:,.0f} (${mix.usd_per_day_all_on_demand:,.0f})",
                ),
            ]
        c.print(_kv_table(f"Cost: {e.label}, {input_len}/{output_len} tokens", rows))
        c.print(tc.reason, highlight=False)
        if mix is not None:
            c.print(mix.reason, highlight=False)

    _emit(output, {"perf": e, "token_cost": tc, "procurement": mix, "price_source": origin}, render)
