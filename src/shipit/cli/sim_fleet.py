"""``shipit sim fleet``: a multi-region fleet over hours, from ``fleet.yaml`` and a demand curve.

Thin: read the fleet config, the trace (``sim.traces``) or the rate series (``shipit plan
procure``'s reader), derive the replica's token rates from a catalog model and GPU when the
config names those, run ``sim.regions.simulate_fleet`` with progress on stderr, print a table
or JSON, and write ``fleet_sim.json`` and the plots to ``--out``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shipit import capacity as cap
from shipit.capacity.procurement_demand import rates_from_timestamps
from shipit.cli.plan_common import OutOpt, emit, fail, run
from shipit.cli.plan_procure import read_rate_series
from shipit.cli.sim_fleet_plots import write_fleet_plots
from shipit.config.fleet import FleetConfig, load_fleet_config
from shipit.config.gateway import ConfigError
from shipit.engine.model_files import resolve_model
from shipit.sim.fleet_exact import TraceArrival
from shipit.sim.fleet_setup import fleet_setup
from shipit.sim.regions import simulate_fleet
from shipit.sim.results import SimRequest
from shipit.sim.traces import parse_trace

TRAFFIC_MODES = ("auto", "requests", "fluid")
# Above this many requests over the run, --traffic auto takes the fluid model.
EXACT_MAX_REQUESTS = 2_000_000

HELP = (
    "Simulate a multi-region fleet for hours: client regions' demand routed to the planes "
    "of a fleet.yaml by the global routing policy, each plane's replicas scaled by the live "
    "autoscaler inside bounds the placement policy sets from demand per region, replicas "
    "bought from reserved, on-demand and spot pools (pool choice by price and spot "
    "shortage), spot pre-emptions (notice, drain, replacement) and GPU failures (detection, "
    "cordon, replacement) drawn at their configured rates, planes failed over when a "
    "scheduled outage takes them out. Reports TTFT SLO attainment overall and per region, "
    "replicas by plane and pool, cost per hour and per million tokens, pre-emptions, "
    "failures, recoveries and failovers with their reasons.\n\n"
    "At this scale engine steps are not simulated: each replica is --concurrency slots, a "
    "request holds one for its prefill + decode time (from its lengths and the replica's "
    "per-request token rates), and each plane's gateway is one queue: first come first "
    "served, request by request, when a trace is replayed (--traffic requests); Erlang C "
    "below saturation and a fluid backlog above for a rate curve (--traffic fluid), where a "
    "region's requests spill to a farther plane as often as their nearest finds every slot "
    "busy. See docs/fleet.md.\n\n"
    "The fleet.yaml needs a traffic: section (client regions with utc_offset_h and share, "
    "optional residency; replica: concurrency and prefill/decode tokens per second, or "
    "model and gpu to derive them; ttft_slo_ms) and may have a simulation: section (tick_s, "
    "outages: [{plane, at_h, for_h}], spot_shortages: [...]).\n\n"
    "Demand: --trace FILE (JSON lines or CSV, one request a line, lengths from the trace, "
    "an optional region column naming each request's client region) or --rate-series FILE "
    "(CSV timestamp,rate, as shipit plan procure reads it). A trace's requests are replayed "
    "one by one at their own times (--traffic requests: each routed by the global routing "
    "policy with the planes' free slots and queues at that moment, each plane's gateway a "
    "first-come-first-served queue in front of its slots), or counted in --bucket-s buckets "
    "into a rate curve for the fluid model (--traffic fluid; the default for traces of more "
    f"than {EXACT_MAX_REQUESTS:,} requests over the run, and for rate series). Demand "
    "repeats to cover --hours; --rate-scale multiplies the rates (a trace replays that many "
    "times faster).\n\n"
    "Examples:\n\n"
    "  shipit sim fleet --config examples/fleet.yaml --rate-series day.csv --hours 24\n\n"
    "  shipit sim fleet --config examples/fleet.yaml --trace trace.jsonl --rate-scale 50 "
    "--hours 6 --seed 3 --out runs/fleet -o json"
)


def register(sim_app: typer.Typer) -> None:
    sim_app.command("fleet", help=HELP)(fleet)


def _derive_rates(
    fleet_cfg: FleetConfig, input_len: float, output_len: float
) -> tuple[float, float]:
    """Per-request prefill and decode token rates of a busy replica of the configured model
    on the configured GPU, from the capacity planner's estimate at the replica's concurrency."""
    assert fleet_cfg.traffic is not None
    rep = fleet_cfg.traffic.replica
    assert rep.model is not None and rep.gpu is not None
    catalog = cap.load_catalog()
    d = run(
        lambda: cap.Deployment(
            model=resolve_model(catalog, rep.model or ""),
            gpu=catalog.gpu(rep.gpu or ""),
            tp=fleet_cfg.gpus_per_replica,
        )
    )
    perf = run(
        lambda: cap.estimate_perf(
            d,
            input_len=round(input_len),
            output_len=max(round(output_len), 1),
            concurrency=rep.concurrency,
        )
    )
    return input_len / (perf.ttft_ms / 1000.0), 1000.0 / perf.tpot_ms


def _demand(
    trace: Path | None, rate_series: Path | None, bucket_s: float
) -> tuple[tuple[float, ...], float, list[SimRequest] | None]:
    """The rate curve, its step and, from a trace, its requests."""
    if (trace is None) == (rate_series is None):
        raise fail("give exactly one of --trace FILE or --rate-series FILE")
    if bucket_s <= 0:
        raise fail(f"--bucket-s {bucket_s}: give a bucket longer than 0 s")
    if rate_series is not None:
        rates, step = read_rate_series(str(rate_series))
        return rates, step, None
    assert trace is not None
    if not trace.is_file():
        raise fail(f"--trace {trace}: no such file; give a JSON lines or CSV trace")
    fmt = "csv" if trace.suffix.lower() in (".csv", ".tsv") else "auto"
    requests = run(lambda: parse_trace(trace.read_text(encoding="utf-8"), fmt=fmt))
    if len(requests) < 2:
        raise fail(f"--trace {trace}: {len(requests)} request(s); a demand curve needs more")
    rates = run(lambda: rates_from_timestamps([q.arrival_s for q in requests], bucket_s=bucket_s))
    return rates, bucket_s, requests


def _exact(
    traffic: str,
    requests: list[SimRequest] | None,
    fleet_cfg: FleetConfig,
    *,
    hours: float,
    rate_scale: float,
) -> tuple[TraceArrival, ...]:
    """The trace's requests for request-exact traffic, or () for the fluid model."""
    if traffic not in TRAFFIC_MODES:
        raise fail(f"--traffic {traffic!r} is not known; use {', '.join(TRAFFIC_MODES)}")
    if traffic == "fluid":
        return ()
    if requests is None:
        if traffic == "requests":
            raise fail(
                "--traffic requests replays a trace's requests at their own times: give "
                "--trace FILE (a rate series has no requests to replay; use --traffic fluid)"
            )
        return ()
    span = max(requests[-1].arrival_s / rate_scale, 1e-9)
    expected = len(requests) * hours * 3600.0 / span
    if traffic == "auto" and expected > EXACT_MAX_REQUESTS:
        return ()
    assert fleet_cfg.traffic is not None
    names = [r.name for r in fleet_cfg.traffic.regions]
    out = []
    for n, q in enumerate(requests, start=1):
        region = None
        if q.region is not None:
            if q.region not in names:
                raise fail(
                    f"--trace request {n}: region {q.region!r} is not one of the traffic "
                    f"section's regions ({', '.join(names)}); name one of those or drop the "
                    "region field to have regions drawn by their shares"
                )
            region = names.index(q.region)
        out.append(TraceArrival(q.arrival_s / rate_scale, q.prompt_tokens, q.output_tokens, region))
    return tuple(out)


def _service_cv2(lengths: list[tuple[int, int]], prefill: float, decode: float) -> float:
    """The squared coefficient of variation of the requests' service times."""
    times = [i / prefill + o / decode for i, o in lengths]
    mean = statistics.fmean(times)
    return statistics.pvariance(times, mean) / mean**2 if mean > 0 else 0.0


def fleet(
    config: Path = typer.Option(..., "--config", "-c", help="fleet.yaml with a traffic: section."),
    trace: Path | None = typer.Option(None, "--trace", help="Request trace, JSON lines or CSV."),
    rate_series: Path | None = typer.Option(
        None, "--rate-series", help="CSV timestamp,rate (requests/s per step)."
    ),
    hours: float = typer.Option(24.0, "--hours", help="Simulated hours."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (same seed, same run)."),
    bucket_s: float = typer.Option(60.0, "--bucket-s", help="Trace: step of the rate curve, s."),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Multiply every rate."),
    sample_s: float = typer.Option(300.0, "--sample-s", help="Time-series resolution, s."),
    traffic: str = typer.Option(
        "auto",
        "--traffic",
        help="requests: replay the trace's requests at their own times, each routed and "
        "queued on its own; fluid: Poisson draws from the rate curve on the M/G/c model; "
        f"auto: requests for a trace of up to {EXACT_MAX_REQUESTS:,} requests over the run.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write fleet_sim.json and PNG plots to this directory."
    ),
    output: str = OutOpt,
) -> None:
    if output not in ("table", "json"):
        raise fail(f"--output {output!r} is not known; use table or json")
    if hours <= 0:
        raise fail(f"--hours {hours}: give a positive number of hours")
    if rate_scale <= 0 or sample_s <= 0:
        raise fail(f"--rate-scale {rate_scale} and --sample-s {sample_s} must be > 0")
    try:
        fleet_cfg = load_fleet_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    if fleet_cfg.traffic is None:
        raise fail(
            f"{config}: no traffic: section; the simulator needs client regions (name, "
            "utc_offset_h, share) and the replica model (see docs/fleet.md and "
            "examples/fleet.yaml)"
        )
    rates, step_s, requests = _demand(trace, rate_series, bucket_s)
    rates = tuple(r * rate_scale for r in rates)
    exact = _exact(traffic, requests, fleet_cfg, hours=hours, rate_scale=rate_scale)
    lengths = None if requests is None else [(q.prompt_tokens, q.output_tokens) for q in requests]
    if lengths:
        input_len = statistics.fmean(i for i, _ in lengths)
        output_len = statistics.fmean(o for _, o in lengths)
    else:
        input_len = float(fleet_cfg.traffic.input_len)
        output_len = float(fleet_cfg.traffic.output_len)
    prefill = decode = None
    rep = fleet_cfg.traffic.replica
    if rep.prefill_tokens_per_s is None or rep.decode_tokens_per_s is None:
        prefill, decode = _derive_rates(fleet_cfg, input_len, output_len)
    cv2 = 0.0
    if lengths:
        cv2 = _service_cv2(
            lengths,
            prefill or rep.prefill_tokens_per_s or 1.0,
            decode or rep.decode_tokens_per_s or 1.0,
        )
    setup = run(
        lambda: fleet_setup(
            fleet_cfg,
            rates_rps=rates,
            step_s=step_s,
            hours=hours,
            seed=seed,
            input_len=input_len,
            output_len=output_len,
            prefill_tokens_per_s=prefill,
            decode_tokens_per_s=decode,
            service_cv2=cv2,
            sample_s=sample_s,
            requests=exact,
        )
    )
    err, tty, shown = Console(stderr=True), sys.stderr.isatty(), [-1]
    if setup.service.prefill_s >= setup.ttft_slo_s:
        err.print(
            f"[yellow]warning:[/yellow] the mean prompt ({setup.service.input_len:,.0f} tokens) "
            f"takes {setup.service.prefill_s:.2f} s to prefill at "
            f"{setup.service.prefill_tokens_per_s:,.0f} tokens/s, over the TTFT SLO of "
            f"{setup.ttft_slo_s * 1000:g} ms: every request misses it; raise traffic.ttft_slo_ms "
            "or the replica's prefill rate",
            highlight=False,
        )

    def progress(now_s: float, end_s: float) -> None:
        tenth = int(10 * now_s / end_s) if end_s else 10
        if tty:
            err.print(f"\rsimulated {now_s / 3600:,.1f} / {end_s / 3600:,.1f} h", end="")
        elif tenth > shown[0]:  # a log file gets a line every 10 %
            shown[0] = tenth
            err.print(f"simulated {now_s / 3600:,.1f} / {end_s / 3600:,.1f} h", highlight=False)

    report = run(lambda: simulate_fleet(setup, progress=progress))
    if tty:
        err.print()
    svc = setup.service
    payload: dict[str, Any] = {
        "config": str(config),
        "demand": str(trace or rate_series),
        "traffic": "requests" if exact else "fluid",
        "seed": seed,
        "service": {
            "concurrency": svc.concurrency,
            "input_len": round(svc.input_len, 1),
            "output_len": round(svc.output_len, 1),
            "prefill_tokens_per_s": round(svc.prefill_tokens_per_s, 1),
            "decode_tokens_per_s": round(svc.decode_tokens_per_s, 2),
            "service_cv2": round(svc.service_cv2, 4),
            "service_s": round(svc.service_s, 3),
            "ttft_slo_ms": setup.ttft_slo_s * 1000,
        },
        **report,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "fleet_sim.json").write_text(json.dumps(payload, indent=1))
        plots = write_fleet_plots(payload, out)
        err.print(f"wrote {out / 'fleet_sim.json'} and {len(plots)} plots", highlight=False)
    emit(output, _without_series(payload), lambda c: _print(c, payload))


def _without_series(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "series"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _print(c: Console, p: dict[str, Any]) -> None:
    t = Table(title=f"fleet: {p['hours']:g} h, seed {p['seed']}", show_header=False)
    ppm = p["usd_per_million_tokens"]
    rows = [
        ("requests", f"{p['requests']:,}"),
        (f"TTFT <= {p['service']['ttft_slo_ms']:g} ms", _pct(p["slo_attainment"])),
        *(
            (f"  {name}", f"{_pct(r['slo_attainment'])} of {r['requests']:,}")
            for name, r in p["regions"].items()
        ),
        (
            "failed / unrouted / timed out",
            f"{p['failed']:,} / {p['unrouted']:,} / {p['dropped']:,}",
        ),
        ("interrupted in flight", f"{p['interrupted']:,}"),
        ("cost", f"${p['cost_usd']:,.2f} (${p['cost_usd_per_hour']:,.2f}/h)"),
        ("$ per million tokens", "-" if ppm is None else f"${ppm:.4f}"),
        ("cost by pool", ", ".join(f"{k} ${v:,.0f}" for k, v in p["cost_usd_by_pool"].items())),
        *(
            (
                f"replicas {plane} (end, peak {p['peak_replicas'][plane]})",
                ", ".join(f"{k} {v}" for k, v in pools.items()),
            )
            for plane, pools in p["replicas_end"].items()
        ),
        ("pool choices", ", ".join(f"{k} {v}" for k, v in p["pool_choices"].items())),
        ("spot pre-emptions", f"{p['preemptions']}"),
        ("GPU failures (cordoned)", f"{p['gpu_failures']} ({p['cordons']})"),
        ("replacements ready", f"{p['recoveries']} (mean {p['mean_recovery_s'] or 0:.0f} s)"),
        ("routing", ", ".join(f"{k} {v:,}" for k, v in p["routing"].items())),
    ]
    for k, v in rows:
        t.add_row(k, v)
    for f in p["failovers"]:
        t.add_row(
            f"failover at {f['t_h']:.2f} h", f"{f['plane']} {f['reason_code']}: {f['reason']}"
        )
    c.print(t)
