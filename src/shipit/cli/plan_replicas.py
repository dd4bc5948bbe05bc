"""``shipit plan replicas``: replicas and autoscaling settings for traffic at SLO percentiles.

Thin: flags to a traffic profile, SLO and ``Deployment``, ``capacity.size_replicas``, a table
or JSON; ``--write-config`` hands the autoscaling block to ``plan_write``.
"""

from __future__ import annotations

from pathlib import Path

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
    kv_table,
    run,
    slo_targets,
    traffic_profile,
)
from shipit.engine.model_files import resolve_model

HELP = (
    "Minimum replicas and GPUs for a traffic profile at SLO percentiles, with queueing "
    "headroom (Erlang C or M/D/c) instead of averages, and the autoscaling settings it "
    "implies (concurrency target, min replicas against cold start and ramp, scale-down "
    "delay).\n\n"
    "Examples:\n\n"
    "  shipit plan replicas -m llama-3.1-8b -g h100 --mean-rps 20 --peak-rps 60 "
    "--input-len 1000 --output-len 200 --ttft-ms 800 --tpot-ms 40\n\n"
    "  shipit plan replicas -m qwen2.5-72b -g h200 --tp 2 --dtype fp8 --mean-rps 3 "
    "--arrival-cv 2 --input-len 3000 --input-len-p99 12000 --output-len 400 "
    "--ttft-ms 3000 --tpot-ms 60 --percentile 99 --queue-model md-c -o json\n\n"
    "  shipit plan replicas -m llama-3.1-8b -g h100 --mean-rps 20 --input-len 1000 "
    "--output-len 200 --ttft-ms 800 --tpot-ms 40 --write-config shipit.yaml --deployment chat"
)


def register(plan_app: typer.Typer) -> None:
    plan_app.command("replicas", help=HELP)(replicas)


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
    write_config: Path | None = typer.Option(
        None,
        "--write-config",
        help="Also write the autoscaling block (min/max replicas, target_concurrency, delays, "
        "cold_start_s) into this shipit.yaml (created if absent; other settings kept, YAML "
        "comments not).",
    ),
    deployment_name: str | None = typer.Option(
        None,
        "--deployment",
        help="The deployment of --write-config to update (needed when it has several).",
    ),
) -> None:
    catalog = cap.load_catalog()
    t = traffic_profile(
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
    m = run(lambda: resolve_model(catalog, model))
    d = deployment(
        catalog,
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        max_model_len=min(m.max_context, t.input_tail + t.output_tail),
    )
    p = run(
        lambda: cap.size_replicas(
            d, t, slo_targets(ttft_ms, tpot_ms, percentile), queue_model=queue_model
        )
    )

    emit(output, p, lambda c: _render(c, p))
    if write_config is not None:
        from shipit.cli.plan_write import autoscaling_block, write_autoscaling

        block = autoscaling_block(p.autoscaling)
        name = run(lambda: write_autoscaling(write_config, deployment_name, block))
        typer.echo(f"wrote the autoscaling of deployment {name!r} to {write_config}", err=True)


def _render(c: Console, p: cap.ReplicaPlan) -> None:
    a = p.autoscaling
    rows = [
        ("replicas at peak / mean", f"{p.replicas_peak} / {p.replicas_mean}"),
        ("GPUs at peak / mean", f"{p.gpus_peak} / {p.gpus_mean}"),
        ("concurrency per replica (max_num_seqs)", str(p.concurrency_per_replica)),
        ("slot utilisation at peak", f"{p.utilization_at_peak:.0%}"),
        (
            f"p{p.percentile:g} TTFT service + queue",
            f"{p.ttft_tail_ms:,.0f} + {p.queue_wait_tail_ms:,.0f} ms",
        ),
        (f"p{p.percentile:g} TPOT", f"{p.tpot_tail_ms:,.1f} ms"),
        ("autoscaler: target in-flight / replica", str(a.target_concurrency_per_replica)),
        ("autoscaler: min / max replicas", f"{a.min_replicas} / {a.max_replicas}"),
        ("autoscaler: cold start (est.)", f"{a.cold_start_s:,.0f} s"),
        (
            "autoscaler: scale-up / scale-down delay",
            f"{a.scale_up_delay_s:,.0f} s / {a.scale_down_delay_s:,.0f} s",
        ),
    ]
    c.print(kv_table(f"Replicas: {p.label}", rows))
    c.print(p.reason, highlight=False)
    c.print(a.reason, highlight=False)
