"""``shipit plan cost``: dollars per million tokens, and the reserved / on-demand / spot mix.

Thin: flags to a ``Deployment``, a GPU-hour price (``capacity.gpu_hour_price``), then
``capacity.token_cost`` and, with ``--demand``, ``capacity.procurement_mix``; a table or JSON.
"""

from __future__ import annotations

import typer
from rich.console import Console

from shipit import capacity as cap
from shipit.cli.plan_common import (
    DtypeOpt,
    GpuOpt,
    KvOpt,
    ModelOpt,
    OutOpt,
    TpOpt,
    deployment,
    emit,
    fail,
    kv_table,
    run,
)

HELP = (
    "Dollars per million input and output tokens from price, utilisation and throughput "
    "(precision changes throughput); with --demand, the reserved / on-demand / spot mix "
    "for a 24-hour curve of GPUs needed.\n\n"
    "Examples:\n\n"
    "  shipit plan cost -m llama-3.1-8b -g h100 --input-len 1000 --output-len 200 "
    "--concurrency 64 --provider lambda --utilization 0.6\n\n"
    "  shipit plan cost -m llama-3.1-70b -g h100 --tp 4 --dtype fp8 --input-len 2000 "
    "--output-len 300 --usd-per-gpu-hour 2.5 --provider aws --spot-fraction 0.3 "
    "--demand 8,8,8,8,8,8,12,16,24,32,32,32,32,32,32,32,28,24,20,16,12,8,8,8 -o json"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("cost", help=HELP)(cost)


def _demand(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise fail(f"--demand {text!r}: give 24 comma-separated GPU counts") from exc


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
    d = deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=input_len + output_len,
    )
    e = run(
        lambda: cap.estimate_perf(
            d, input_len=input_len, output_len=output_len, concurrency=concurrency
        )
    )
    gpu_hour = run(
        lambda: cap.gpu_hour_price(
            catalog, d.gpu.id, provider=provider, usd_per_gpu_hour=usd_per_gpu_hour
        )
    )
    price, prov, origin = gpu_hour.usd_per_gpu_hour, gpu_hour.provider, gpu_hour.origin
    tc = run(lambda: cap.token_cost(e, usd_per_gpu_hour=price, utilization=utilization))
    hours = _demand(demand)
    mix = None
    if hours:
        mix = run(
            lambda: cap.procurement_mix(
                hours,
                usd_per_gpu_hour=price,
                reserved_discount=prov.reserved_1y_discount if prov else None,
                spot_discount=prov.spot_discount if prov else None,
                spot_fraction=spot_fraction,
            )
        )

    def render(c: Console) -> None:
        rows = _rows(price, origin, tc, mix)
        c.print(kv_table(f"Cost: {e.label}, {input_len}/{output_len} tokens", rows))
        c.print(tc.reason, highlight=False)
        if mix is not None:
            c.print(mix.reason, highlight=False)

    emit(output, {"perf": e, "token_cost": tc, "procurement": mix, "price_source": origin}, render)


def _rows(
    price: float, origin: str, tc: cap.TokenCost, mix: cap.ProcurementPlan | None
) -> list[tuple[str, str]]:
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
            ("$/day with this mix", f"${mix.usd_per_day:,.0f}"),
            ("$/day all on-demand", f"${mix.usd_per_day_all_on_demand:,.0f}"),
        ]
    return rows
