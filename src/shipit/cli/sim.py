"""``shipit sim replay``: replay a request trace through the fleet simulator and score it.

Thin: read the trace file, parse it (``sim.traces``), build the replica, deployment and
autoscaling settings from the flags, replay (``sim.trace_replay``: the live routing, admission,
health and autoscaling code in simulated time), and render a table or ``--output json``.
Progress goes to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shipit.cli.plan_common import OutOpt, emit, fail, run
from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import (
    DeploymentConfig,
    PrefixCacheConfig,
    QueueingConfig,
    RoutingConfig,
)
from shipit.engine.engine import EngineConfig
from shipit.engine.sim_timing import ReplicaModel
from shipit.sim.trace_replay import POLICIES, ReplayScore, ReplaySetup, replay_trace
from shipit.sim.traces import Columns, parse_trace

sim_app = typer.Typer(
    name="sim",
    help="The fleet simulator: the live policies in simulated time, on simulated GPUs.",
    no_args_is_help=True,
)

HELP = (
    "Replay a request trace through the fleet simulator (the live routing, admission, health "
    "and autoscaling code; replicas stepped by the engine's scheduler, timed by the capacity "
    "planner's roofline) and report TTFT SLO attainment, TTFT P50/P99, requests dropped, "
    "replica-seconds against the oracle's (per 10 s window the fewest replicas whose capacity "
    "serves that window's work, at least one), peak replicas and replica starts.\n\n"
    "Traces: JSON lines or CSV, one request a line: an arrival time (seconds, milliseconds or "
    "an ISO datetime) and prompt / output token counts, found by common names (timestamp; "
    "input_length, prompt_tokens, ContextTokens; output_length, completion_tokens, "
    "GeneratedTokens) or named with --columns. A hash_ids field (prefix-block ids of 512 "
    "tokens, as in the Mooncake traces) gives the prompts their shared prefixes: the replicas' "
    "prefix caches then hit as the trace's did, and --routing prefix_cache has something to "
    "follow; the report adds the hit rate and the load per replica in requests and in prompt "
    "tokens computed.\n\n"
    "Examples:\n\n"
    "  shipit sim replay --trace mooncake_conversation.jsonl --cold-start-s 30\n\n"
    "  shipit sim replay --trace azure.csv --columns timestamp=TIMESTAMP --policy knative "
    "--time-scale 4 --max-replicas 32 -o json\n\n"
    "  shipit sim replay --trace t.jsonl --policy fixed:6 --gpu h200 --model llama-3.1-70b --tp 4"
    "\n\n"
    "  shipit sim replay --trace mooncake_conversation.jsonl --policy fixed:4 --routing "
    "prefix_cache --time-scale 2 --duration-s 120"
)


def register(app: typer.Typer) -> None:
    from shipit.cli import sim_fleet

    sim_app.command("replay", help=HELP)(replay)
    sim_fleet.register(sim_app)
    app.add_typer(sim_app, name="sim")


def replay(
    trace: Path = typer.Option(..., "--trace", help="JSON lines or CSV trace file."),
    gpu: str = typer.Option("H100", "--gpu", help="Simulated GPU (planner catalog name)."),
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Model (catalog id)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel GPUs per replica."),
    cold_start_s: float = typer.Option(30.0, "--cold-start-s", help="Replica start to ready."),
    ttft_slo_ms: float = typer.Option(2000.0, "--ttft-slo-ms", help="TTFT SLO, queueing in."),
    policy: str = typer.Option(
        "shipit", "--policy", help=f"Scaling policy: {', '.join(POLICIES)}."
    ),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Replay X times faster."),
    min_replicas: int = typer.Option(0, "--min-replicas", help="0 allows scale to zero."),
    max_replicas: int = typer.Option(32, "--max-replicas"),
    target_concurrency: float | None = typer.Option(
        None, "--target-concurrency", help="Requests a replica should carry (default: derived)."
    ),
    prefill_utilization: float | None = typer.Option(
        None,
        "--prefill-utilization",
        help="Share of a replica's time its prompts' prefill should take: the fleet is at least "
        "the prefill seconds arriving a second / this (default 0.5; 0 turns it off).",
        min=0.0,
        max=1.0,
    ),
    scale_down_delay_s: float | None = typer.Option(None, "--scale-down-delay-s"),
    idle_timeout_s: float | None = typer.Option(None, "--idle-timeout-s"),
    max_concurrency: int = typer.Option(
        16, "--max-concurrency", help="Most requests the gateway sends one replica at once."
    ),
    warmup_s: float = typer.Option(
        0.0, "--warmup-s", help="Replay the trace's last S seconds first (fleet starts warm)."
    ),
    duration_s: float | None = typer.Option(
        None, "--duration-s", help="Replay only the first S seconds (after --time-scale)."
    ),
    routing: str = typer.Option("least_outstanding", "--routing", help="Routing policy."),
    prefill_us_per_token: float = typer.Option(
        100.0,
        "--prefill-us-per-token",
        help="prefix_cache: the prefill time of a token it weighs a cache holder's queue with.",
    ),
    max_affinity_wait_s: float = typer.Option(
        PrefixCacheConfig.model_fields["max_affinity_wait_s"].default,
        "--max-affinity-wait-s",
        help="prefix_cache: the longest a request waits for its full cache holder (0: never).",
    ),
    max_output_tokens: int | None = typer.Option(
        None, "--max-output-tokens", help="Cap every request's output at this many tokens."
    ),
    columns: str | None = typer.Option(
        None, "--columns", help="timestamp=NAME,input=NAME,output=NAME (any subset)."
    ),
    time_unit: str = typer.Option("auto", "--time-unit", help="auto, s or ms."),
    output: str = OutOpt,
) -> None:
    if not trace.is_file():
        raise fail(f"--trace {trace}: no such file; give a JSON lines or CSV trace")
    text = trace.read_text(encoding="utf-8")
    fmt = "csv" if trace.suffix.lower() in (".csv", ".tsv") else "auto"
    requests = run(
        lambda: parse_trace(
            text,
            fmt=fmt,
            columns=Columns.parse(columns),
            time_unit=time_unit,
            time_scale=time_scale,
        )
    )
    if duration_s is not None:
        requests = [q for q in requests if q.arrival_s < duration_s]
    if max_output_tokens is not None:
        if max_output_tokens < 1:
            raise fail(f"--max-output-tokens {max_output_tokens}: give 1 or more")
        requests = [
            replace(q, output_tokens=min(q.output_tokens, max_output_tokens)) for q in requests
        ]
    shared = any(q.prefix_blocks for q in requests)
    overrides: dict[str, float | int | None] = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
    }
    if prefill_utilization is not None:
        overrides["prefill_utilization"] = prefill_utilization or None  # 0: the rule off
    for name, value in (
        ("target_concurrency", target_concurrency),
        ("scale_down_delay_s", scale_down_delay_s),
        ("idle_timeout_s", idle_timeout_s),
        ("cold_start_s", cold_start_s),
    ):
        if value is not None:
            overrides[name] = value
    setup = run(
        lambda: ReplaySetup(
            replica=ReplicaModel(
                gpu=gpu,
                model=model,
                tp=tp,
                cold_start_s=cold_start_s,
                # Prompts without content share nothing: caching them would only cost time.
                engine=EngineConfig(enable_prefix_caching=shared),
            ),
            deployment=DeploymentConfig(
                name="replay",
                replicas=0,
                routing=RoutingConfig(
                    policy=routing,
                    prefix_cache=PrefixCacheConfig(
                        prefill_us_per_token=prefill_us_per_token,
                        max_affinity_wait_s=max_affinity_wait_s,
                    ),
                ),
                queueing=QueueingConfig(
                    max_concurrency=max_concurrency, cold_start_hold_s=120, queue_timeout_s=120
                ),
            ),
            scaling=AutoscalingConfig(**overrides),
            policy=policy,
            ttft_slo_s=ttft_slo_ms / 1000,
            warmup_s=warmup_s,
        )
    )
    err, tty, shown = Console(stderr=True), sys.stderr.isatty(), [-1]

    def progress(now_s: float, end_s: float) -> None:
        tenth = int(10 * now_s / end_s) if end_s else 10
        if tty:
            err.print(f"\rsimulated {now_s:,.0f} / {end_s:,.0f} s", end="", highlight=False)
        elif tenth > shown[0]:  # a log file gets a line every 10 %
            shown[0] = tenth
            err.print(f"simulated {now_s:,.0f} / {end_s:,.0f} s", highlight=False)

    score = run(lambda: replay_trace(setup, requests, progress=progress))
    if tty:
        err.print()
    payload = {
        "trace": str(trace),
        "requests": len(requests),
        "gpu": gpu,
        "model": model,
        "tp": tp,
        "cold_start_s": cold_start_s,
        "ttft_slo_ms": ttft_slo_ms,
        "time_scale": time_scale,
        "routing": routing,
        **score.as_dict(),
    }
    emit(output, payload, lambda c: c.print(_table(score, ttft_slo_ms)))


def _table(s: ReplayScore, slo_ms: float) -> Table:
    t = Table(title=f"replay: {s.policy}", show_header=False)
    p50 = "-" if s.ttft_p50_s is None else f"{s.ttft_p50_s * 1000:,.0f} ms"
    p99 = "inf (over 1% not served)" if s.ttft_p99_s is None else f"{s.ttft_p99_s * 1000:,.0f} ms"
    for k, v in (
        ("requests", f"{s.requests:,}"),
        (f"TTFT <= {slo_ms:g} ms", f"{s.slo_attainment:.2%}"),
        (
            "  of those whose prompt alone fits",
            f"{s.feasible_attainment:.2%} ({s.infeasible:,} cannot: prefill > SLO)",
        ),
        ("TTFT P50 / P99", f"{p50} / {p99}"),
        ("dropped", f"{s.dropped:,}"),
        ("replica-seconds", f"{s.replica_seconds:,.0f}"),
        ("oracle replica-seconds", f"{s.oracle_replica_seconds:,.0f}"),
        ("ratio to oracle", f"{s.ratio:.2f}x"),
        ("peak replicas (oracle)", f"{s.peak_replicas} ({s.oracle_peak_replicas})"),
        ("replica starts", f"{s.replica_starts}"),
    ):
        t.add_row(k, v)
    if s.prefix_hit_rate is not None and s.prefix_hit_rate > 0:
        figures = s.routing_dict()
        t.add_row("prefix-cache hit rate", f"{s.prefix_hit_rate:.1%}")
        t.add_row("max/mean requests", f"{figures['max_over_mean_requests']}")
        t.add_row("max/mean computed tokens", f"{figures['max_over_mean_computed_tokens']}")
    return t
