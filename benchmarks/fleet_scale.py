"""The fleet simulator at scale: 10,000 GPUs over 24 simulated hours, on one core.

Four planes (us-east, us-west, eu-west, ap-northeast), each selling reserved, on-demand and spot
capacity (spot pre-empted at 0.02-0.05 per replica-hour with a 30-120 s notice; GPUs failing at
the default 1 per 50,000 GPU-hours), four client regions (the Americas, Europe pinned to the eu
residency tag, Asia, Oceania) whose demand follows their own local day (``diurnal: 0.6``).
The total rate curve is the shared Mooncake conversation trace's shape: its hour counted in 96
buckets stretched onto a day of 15-minute steps, smoothed by a centred moving average over five
steps (one 37.5 s bucket of one trace is noisier than the traffic of many clients over 15
minutes), scaled so that its peak needs about 10,000
single-GPU replicas (Llama-3.1-8B-class replicas of 16 slots, 1,500 prompt and 250 output
tokens, 6,000 prefill and 40 decode tokens per second per request; TTFT SLO 2 s). One plane
(eu-west) is out for an hour at 10:00 and us-east has no spot for two hours from 16:00.

Prints the wall time, the events and policy decisions handled per second, and the run's
figures; writes them to ``benchmarks/results/fleet_scale.json``. Run:

    uv run python benchmarks/fleet_scale.py [--hours 24] [--gpus 10000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from shipit.capacity.procurement_demand import rates_from_timestamps
from shipit.config.fleet import parse_fleet_config
from shipit.sim.fleet_setup import fleet_setup
from shipit.sim.regions import simulate_fleet

TRACE = Path(__file__).resolve().parents[1] / "../shared/data/traces/mooncake_conversation.jsonl"
CONCURRENCY, INPUT, OUTPUT, PREFILL, DECODE, UTIL = 16, 1500, 250, 6000.0, 40.0, 0.7


def _plane(
    name: str,
    utc: float,
    share: float,
    gpus: int,
    residency: list[str],
    od: float,
    preempt: float,
    notice: float,
) -> dict[str, Any]:
    most = round(gpus * share * 1.3)  # a plane can hold 30% over its share of the peak
    return {
        "name": name,
        "utc_offset_h": utc,
        "residency": residency,
        "max_replicas": most,
        "pools": {
            "reserved": {
                "usd_per_gpu_hour": round(od * 0.6, 2),
                "max_replicas": round(most * 0.35),
            },
            "on_demand": {"usd_per_gpu_hour": od, "obtain_delay_s": 300},
            "spot": {
                "usd_per_gpu_hour": round(od * 0.4, 2),
                "obtain_delay_s": 600,
                "preemptions_per_hour": preempt,
                "notice_s": notice,
                "max_replicas": round(most * 0.4),
            },
        },
    }


def fleet_doc(gpus: int) -> dict[str, Any]:
    return {
        "fleet": {
            "posture": "active-active",
            "gpus_per_replica": 1,
            "planes": [
                _plane("us-east", -5, 0.3, gpus, ["us"], 4.0, 0.02, 120),
                _plane("us-west", -8, 0.2, gpus, ["us"], 4.1, 0.03, 120),
                _plane("eu-west", 1, 0.3, gpus, ["eu"], 4.3, 0.03, 120),
                _plane("ap-northeast", 9, 0.25, gpus, [], 4.5, 0.05, 30),
            ],
            "traffic": {
                "regions": [
                    {"name": "americas", "utc_offset_h": -6, "share": 0.4},
                    {"name": "europe", "utc_offset_h": 1, "share": 0.25, "residency": "eu"},
                    {"name": "asia", "utc_offset_h": 8, "share": 0.25},
                    {"name": "oceania", "utc_offset_h": 10, "share": 0.1},
                ],
                "replica": {
                    "concurrency": CONCURRENCY,
                    "prefill_tokens_per_s": PREFILL,
                    "decode_tokens_per_s": DECODE,
                },
                "ttft_slo_ms": 2000,
                "input_len": INPUT,
                "output_len": OUTPUT,
                "diurnal": 0.6,
                "target_utilization": UTIL,
            },
            "simulation": {
                "tick_s": 10,
                "outages": [{"plane": "eu-west", "at_h": 10, "for_h": 1}],
                "spot_shortages": [{"plane": "us-east", "at_h": 16, "for_h": 2}],
            },
        }
    }


def day_curve(gpus: int) -> tuple[tuple[float, ...], float]:
    """The trace's hour as a day of 96 15-minute steps, its peak at ``gpus`` replicas' load."""
    ts = [json.loads(line)["timestamp"] / 1e3 for line in TRACE.read_text().splitlines()]
    raw = rates_from_timestamps(ts, bucket_s=(max(ts) - min(ts)) / 96)
    # A centred moving average over five steps (an hour and a quarter of the day): a bucket
    # of 37.5 s of one trace is noisier than the sum of many clients over 15 minutes.
    n = len(raw)
    shape = tuple(sum(raw[(i + k) % n] for k in range(-2, 3)) / 5 for i in range(n))
    service_s = INPUT / PREFILL + OUTPUT / DECODE
    peak_rps = gpus * CONCURRENCY * UTIL / service_s
    return tuple(r * peak_rps / max(shape) for r in shape), 900.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--gpus", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/fleet_scale.json")
    args = ap.parse_args()
    fleet = parse_fleet_config(fleet_doc(args.gpus))
    rates, step = day_curve(args.gpus)
    setup = fleet_setup(fleet, rates_rps=rates, step_s=step, hours=args.hours, seed=args.seed)
    started = time.perf_counter()

    def progress(now_s: float, end_s: float) -> None:
        if int(now_s) % 7200 == 0 or now_s >= end_s:
            wall = time.perf_counter() - started
            print(f"  {now_s / 3600:5.1f} h simulated, {wall:6.1f} s wall", file=sys.stderr)

    report = simulate_fleet(setup, progress=progress)
    wall = time.perf_counter() - started
    series = report.pop("series")
    held = [k for k in series if k.startswith("replicas:")]
    peak = max(sum(series[k][i] for k in held) for i in range(len(series["t_h"])))
    gpu_hours = sum(v for p in report["gpu_hours_by_plane"].values() for v in p.values())
    handled = report["events"] + report["decisions"]
    summary = {
        "wall_s": round(wall, 1),
        "simulated_hours": args.hours,
        "gpus_target": args.gpus,
        "peak_replicas_fleet": peak,  # all planes at once, at the 5-minute samples
        "gpu_hours": round(gpu_hours),
        "gpu_failures_expected": round(gpu_hours * fleet.gpu_failures_per_hour, 2),
        "events": report["events"],
        "decisions": report["decisions"],
        "events_and_decisions_per_s": round(handled / wall),
        "requests_simulated": report["requests"],
        "requests_per_wall_s": round(report["requests"] / wall),
        "ticks": round(args.hours * 3600 / fleet.simulation.tick_s),
    }
    print(
        f"{args.hours:g} h, {args.gpus:,} GPUs target (fleet peak {peak:,} replicas, "
        f"{gpu_hours:,.0f} GPU-hours): {wall:.1f} s wall; "
        f"{report['events']:,} events + {report['decisions']:,} decisions = "
        f"{handled / wall:,.0f}/s; {report['requests']:,} requests "
        f"({report['requests'] / wall:,.0f}/s)"
    )
    print(
        f"SLO {report['slo_attainment']:.4f} "
        + ", ".join(f"{k} {v['slo_attainment']:.4f}" for k, v in report["regions"].items())
    )
    print(
        f"cost ${report['cost_usd']:,.0f} (${report['cost_usd_per_hour']:,.0f}/h, "
        f"${report['usd_per_million_tokens']}/M tokens) by pool {report['cost_usd_by_pool']}"
    )
    print(
        f"pre-emptions {report['preemptions']}, GPU failures {report['gpu_failures']}, "
        f"recoveries {report['recoveries']}, failovers "
        + "; ".join(
            f"{f['t_h']:.2f} h {f['plane']} {f['reason_code']}" for f in report["failovers"]
        )
    )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "fleet_scale",
        "summary": summary,
        "report": report,
        "series_points": len(series["t_h"]),
        "python": sys.version.split()[0],
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
