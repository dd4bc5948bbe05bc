"""``shipit plan procure``: reserved / on-demand / spot for a demand curve, against the baselines.

Thin: reads a rate series (CSV) or a request trace (JSONL or CSV) into a rate per step, sizes
each step at the SLO (``capacity.procurement_demand``), prices the pools from the catalog or
flags, and renders ``capacity.procurement.compare_procurement`` as a table or JSON. File
parsing and its errors live here; every number comes from ``shipit.capacity``.
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shipit import capacity as cap
from shipit.capacity.procurement import Pools, PoolSpec, ProcurementComparison, compare_procurement
from shipit.capacity.procurement_demand import demand_curve, rates_from_timestamps, repeat_to_days
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
    run,
    slo_targets,
    traffic_profile,
)
from shipit.core.fleet import CapacityPool

HELP = (
    "Which capacity to buy for a demand curve: the reserved baseline and the on-demand / spot "
    "share that cost least while capacity covers demand at the SLO, with spot pre-emptions "
    "priced in (the on-demand cover their holes need). Compared with all on-demand, the peak "
    "reserved, and a SpotHedge-style policy (spot + spare spot + on-demand fallback).\n\n"
    "Demand: --rate-series FILE (CSV with columns timestamp, rate: seconds or ISO 8601 times, "
    "requests/s per step) or --trace FILE (JSONL with timestamp in ms, input_length, "
    "output_length; or CSV with timestamp in s, input_tokens, output_tokens), bucketed into "
    "--bucket-s steps. --stretch spreads a short trace over a longer time (24 turns one hour "
    "into one day, rates kept); --days repeats the curve to cover that many days.\n\n"
    "Examples:\n\n"
    "  shipit plan procure --trace trace.jsonl --stretch 24 --days 7 -m llama-3.1-8b -g h100 "
    "--provider aws --ttft-ms 10000 --tpot-ms 50\n\n"
    "  shipit plan procure --rate-series week.csv -m llama-3.1-70b -g h100 --tp 4 "
    "--input-len 1500 --output-len 300 --ttft-ms 1500 --tpot-ms 60 "
    "--spot-preemptions-per-hour 0.05 -o json"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("procure", help=HELP)(procure)


def _seconds(text: str, path: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError as exc:
        raise fail(
            f"{path} line {line}: timestamp {text!r} is neither seconds nor an ISO 8601 time"
        ) from exc


def read_rate_series(path: str) -> tuple[tuple[float, ...], float]:
    """Rates per step and the step in seconds (the median spacing of the timestamps)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"timestamp", "rate"} <= set(reader.fieldnames or []):
                raise fail(
                    f"{path}: a rate series needs columns timestamp,rate; found "
                    f"{','.join(reader.fieldnames or []) or 'none'}"
                )
            rows = []
            for i, row in enumerate(reader):
                try:
                    rate = float(row["rate"])
                except ValueError as exc:
                    raise fail(
                        f"{path} line {i + 2}: rate {row['rate']!r} is not a number"
                    ) from exc
                if rate < 0:
                    raise fail(f"{path} line {i + 2}: rate {rate} is negative")
                rows.append((_seconds(row["timestamp"], path, i + 2), rate))
    except OSError as exc:
        raise fail(f"cannot read rate series {path}: {exc}") from exc
    if len(rows) < 2:
        raise fail(f"{path}: a rate series needs at least two rows to know its step")
    rows.sort()
    step = statistics.median(b[0] - a[0] for a, b in itertools.pairwise(rows))
    if step <= 0:
        raise fail(f"{path}: timestamps repeat; give one row per step")
    return tuple(r for _, r in rows), step


def read_trace(path: str) -> list[tuple[float, int, int]]:
    """(arrival s, input tokens, output tokens) from a JSONL (timestamp in ms) or CSV trace."""
    out: list[tuple[float, int, int]] = []
    try:
        with Path(path).open(encoding="utf-8", newline="") as fh:
            if path.endswith(".csv"):
                for i, row in enumerate(csv.DictReader(fh)):
                    try:
                        out.append(
                            (
                                float(row["timestamp"]),
                                int(row["input_tokens"]),
                                int(row["output_tokens"]),
                            )
                        )
                    except (KeyError, TypeError, ValueError) as exc:
                        raise fail(
                            f"{path} line {i + 2}: need timestamp,input_tokens,output_tokens"
                        ) from exc
            else:
                for i, line in enumerate(fh):
                    if not line.strip():
                        continue
                    try:
                        r = json.loads(line)
                        ts, n_in, n_out = r["timestamp"], r["input_length"], r["output_length"]
                        out.append((float(ts) / 1e3, int(n_in), int(n_out)))
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        raise fail(
                            f"{path} line {i + 1}: need a JSON object with timestamp (ms), "
                            "input_length, output_length"
                        ) from exc
    except OSError as exc:
        raise fail(f"cannot read trace {path}: {exc}") from exc
    if not out:
        raise fail(f"{path}: no requests in the trace")
    return out


def _p99(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _pools(
    catalog: cap.Catalog,
    gpu_id: str,
    provider: str | None,
    usd_per_gpu_hour: float | None,
    spot: tuple[float, float, float, int | None],
    od_obtain_s: float,
) -> tuple[Pools, str]:
    price = run(
        lambda: cap.gpu_hour_price(
            catalog, gpu_id, provider=provider, usd_per_gpu_hour=usd_per_gpu_hour
        )
    )
    p, prov = price.usd_per_gpu_hour, price.provider
    od = PoolSpec(CapacityPool.ON_DEMAND, p, obtain_delay_s=od_obtain_s)
    res = sp = None
    if prov is not None and prov.reserved_1y_discount is not None:
        res = PoolSpec(CapacityPool.RESERVED, p * (1 - prov.reserved_1y_discount))
    if prov is not None and prov.spot_discount is not None:
        preempt, notice, obtain, most = spot
        spot_price = p * (1 - prov.spot_discount)
        sp = run(
            lambda: PoolSpec(
                CapacityPool.SPOT,
                spot_price,
                obtain_delay_s=obtain,
                preemptions_per_hour=preempt,
                notice_s=notice,
                max_replicas=most,
            )
        )
    return Pools(od, reserved=res, spot=sp), price.origin


def procure(
    rate_series: str | None = typer.Option(None, "--rate-series", help="CSV: timestamp,rate."),
    trace: str | None = typer.Option(None, "--trace", help="Request trace, JSONL or CSV."),
    bucket_s: float = typer.Option(300.0, "--bucket-s", help="Trace step, seconds."),
    stretch: float = typer.Option(1.0, "--stretch", help="Spread the trace over X times its span."),
    days: float | None = typer.Option(None, "--days", help="Repeat the curve to N days."),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiply every rate (growth)."),
    model: str = ModelOpt,
    gpu: str = GpuOpt,
    tp: int = TpOpt,
    dtype: str | None = DtypeOpt,
    kv_dtype: str = KvOpt,
    input_len: int | None = typer.Option(None, "--input-len", help="Default: trace mean."),
    input_len_p99: int | None = typer.Option(None, "--input-len-p99"),
    output_len: int | None = typer.Option(None, "--output-len", help="Default: trace mean."),
    output_len_p99: int | None = typer.Option(None, "--output-len-p99"),
    arrival_cv: float = typer.Option(1.0, "--arrival-cv", help="Burstiness; 1 = Poisson."),
    ttft_ms: float = typer.Option(..., "--ttft-ms", help="TTFT SLO (incl. queueing)."),
    tpot_ms: float = typer.Option(..., "--tpot-ms", help="TPOT SLO."),
    percentile: float = typer.Option(99.0, "--percentile", help="SLO percentile."),
    provider: str | None = typer.Option(None, "--provider", help="aws, gcp, lambda, runpod."),
    usd_per_gpu_hour: float | None = typer.Option(None, "--usd-per-gpu-hour"),
    od_obtain_s: float = typer.Option(300.0, "--on-demand-obtain-s"),
    spot_obtain_s: float = typer.Option(600.0, "--spot-obtain-s"),
    spot_preempt: float = typer.Option(0.02, "--spot-preemptions-per-hour", help="Per replica."),
    spot_notice_s: float = typer.Option(120.0, "--spot-notice-s"),
    spot_max: int | None = typer.Option(
        None, "--spot-max-replicas", help="Most spot replicas obtainable at once."
    ),
    no_spot: bool = typer.Option(False, "--no-spot", help="Leave spot out."),
    coverage: float = typer.Option(0.99, "--coverage", help="Share of steps to cover, (0, 1]."),
    overprovision: int = typer.Option(2, "--overprovision", help="SpotHedge spare replicas."),
    output: str = OutOpt,
) -> None:
    if (rate_series is None) == (trace is None):
        raise fail("give exactly one of --rate-series FILE or --trace FILE")
    if stretch <= 0 or rate_scale <= 0:
        raise fail(f"--stretch {stretch} and --rate-scale {rate_scale} must be > 0")
    if trace is not None:
        rows = read_trace(trace)
        rates = run(lambda: rates_from_timestamps([r[0] for r in rows], bucket_s=bucket_s))
        step_s = bucket_s * stretch
        ins, outs = [r[1] for r in rows], [r[2] for r in rows]
        input_len = input_len or round(statistics.fmean(ins))
        output_len = output_len or round(statistics.fmean(outs))
        input_len_p99 = input_len_p99 or max(input_len, _p99(ins))
        output_len_p99 = output_len_p99 or max(output_len, _p99(outs))
    elif rate_series is not None:
        rates, step_s = read_rate_series(rate_series)
        step_s *= stretch
        if input_len is None or output_len is None:
            raise fail("--rate-series needs --input-len and --output-len (mean tokens)")
    rates = tuple(r * rate_scale for r in rates)
    if days is not None:
        rates = run(lambda: repeat_to_days(rates, step_s=step_s, days=days))
    if max(rates) <= 0:
        raise fail("every step of the demand curve has rate 0: nothing to buy")
    catalog = cap.load_catalog()
    t = traffic_profile(
        mean_rps=statistics.fmean(rates),
        arrival_cv=arrival_cv,
        input_len_mean=input_len,
        input_len_p99=input_len_p99,
        output_len_mean=output_len,
        output_len_p99=output_len_p99,
    )
    d = deployment(
        catalog, model, gpu, tp=tp, dtype=dtype, kv_dtype=kv_dtype,
        max_model_len=t.input_tail + t.output_tail,
    )  # fmt: skip
    slo = slo_targets(ttft_ms, tpot_ms, percentile)
    curve = run(lambda: demand_curve(d, t, slo, rates, step_s=step_s))
    spot = (spot_preempt, spot_notice_s, spot_obtain_s, spot_max)
    pools, origin = _pools(catalog, d.gpu.id, provider, usd_per_gpu_hour, spot, od_obtain_s)
    if no_spot:
        pools = Pools(pools.on_demand, reserved=pools.reserved)
    cmp = run(
        lambda: compare_procurement(curve, pools, target=coverage, overprovision=overprovision)
    )
    payload = {
        "deployment": d.label(),
        "price_source": origin,
        "pools": {
            spec.pool.value: {
                "usd_per_gpu_hour": spec.usd_per_gpu_hour,
                "obtain_delay_s": spec.obtain_delay_s,
                "preemptions_per_hour": spec.preemptions_per_hour,
                "notice_s": spec.notice_s,
                "max_replicas": spec.max_replicas,
            }
            for spec in (pools.on_demand, pools.reserved, pools.spot)
            if spec is not None
        },
        "steps": len(curve.replicas),
        "step_s": curve.step_s,
        "hours": curve.hours,
        "replicas_peak": curve.peak,
        "replicas_mean": sum(curve.replicas) / len(curve.replicas),
        "comparison": cmp,
    }
    emit(output, payload, lambda c: render(c, d.label(), curve.hours, curve.peak, pools, cmp))


def render(
    c: Console, label: str, hours: float, peak: int, pools: Pools, cmp: ProcurementComparison
) -> None:
    t = Table(title=f"Procurement: {label}, {hours:,.0f} h curve, peak {peak} replicas")
    for col in ("policy", "reserved", "on-demand peak", "spot peak", "$/week", "$/M tokens"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    t.add_column("coverage", justify="right")
    for o in cmp.outcomes:
        mark = "" if o.slo_met else " (below target)"
        per_m = f"${o.usd_per_million_tokens:,.3f}" if o.usd_per_million_tokens is not None else "-"
        t.add_row(
            ("* " if o.policy == cmp.recommended else "  ") + o.policy,
            str(o.reserved_replicas),
            str(o.on_demand_replicas_peak),
            str(o.spot_replicas_peak),
            f"${o.usd_per_week:,.0f}",
            per_m,
            f"{o.coverage:.2%}{mark}",
        )
    c.print(t)
    prices = [f"on-demand ${pools.on_demand.usd_per_gpu_hour:.2f}"]
    if pools.reserved is not None:
        prices.append(f"reserved ${pools.reserved.usd_per_gpu_hour:.2f}")
    if pools.spot is not None:
        prices.append(f"spot ${pools.spot.usd_per_gpu_hour:.2f}")
    c.print("per GPU-hour: " + ", ".join(prices), highlight=False)
    for o in cmp.outcomes:
        c.print(f"{o.policy}: {o.reason}", highlight=False)
    c.print(f"recommended: {cmp.reason}", highlight=False)
