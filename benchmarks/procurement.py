"""Procurement on a week-long demand curve: every policy's cost and SLO coverage.

The demand curve comes from the shared Mooncake conversation trace. The trace covers one hour,
so its shape is stretched onto a day: arrivals are counted in 37.5 s buckets (96 of them) and
each bucket becomes one 15-minute step, its rate kept, then scaled by ``--rate-scale``. The
day is repeated for seven days and every step is multiplied by seeded log-normal noise
(``exp(N(0, 0.1^2))``, numpy seed ``--seed``). The trace has no night, so a second curve
multiplies the same steps by a day/night envelope (a cosine from 30% of the peak at 04:00 to
100% at 16:00, weekends at 70%): the shape most services see. Each step is sized at the SLO by
``shipit plan replicas``' code with the trace's mean and p99 lengths.

Pools are AWS's H100 quote from the catalog (on demand; 1-year reserved and spot at the
catalog's discounts). Scenarios: spot with the CLI's default risk (0.02 pre-emptions per replica
per hour, 120 s notice, 600 s to obtain; on demand 300 s), spot limited to 20 replicas at a
time, spot pre-empted ten times as often, and no spot. Coverage is the expected share of
steps with capacity >= demand, exact from the Poisson law of spot holes; a seeded Monte-Carlo
replay (pre-emption instants drawn per step, capacity checked every minute, 20 runs) checks it
for every policy that holds spot. Run:

    uv run python benchmarks/procurement.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from shipit.capacity import Deployment, SloTargets, TrafficProfile, load_catalog
from shipit.capacity.procurement import (
    DemandCurve,
    Pools,
    PoolSpec,
    ProcurementOutcome,
    compare_procurement,
    spot_risk,
)
from shipit.capacity.procurement_demand import demand_curve, rates_from_timestamps
from shipit.core.fleet import CapacityPool as P

TRACE = Path(__file__).resolve().parents[1] / "../shared/data/traces/mooncake_conversation.jsonl"
STEP_S = 900.0  # one 15-minute step per trace bucket
BUCKETS_PER_DAY = 96


def load_trace(path: Path) -> tuple[list[float], list[int], list[int]]:
    ts, ins, outs = [], [], []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ts.append(r["timestamp"] / 1e3)
        ins.append(int(r["input_length"]))
        outs.append(int(r["output_length"]))
    return ts, ins, outs


def week_rates(day: tuple[float, ...], *, seed: int, diurnal: bool) -> list[float]:
    rng = np.random.default_rng(seed)
    out = []
    for d in range(7):
        for i, r in enumerate(day):
            hour = i * 24 / len(day)
            env = 1.0
            if diurnal:
                env = 0.65 - 0.35 * math.cos(2 * math.pi * (hour - 4) / 24)
                env *= 0.7 if d >= 5 else 1.0
            out.append(r * env * float(np.exp(rng.normal(0.0, 0.1))))
    return out


def mc_coverage(curve: DemandCurve, o: ProcurementOutcome, pools: Pools, *, runs: int) -> float:
    """Share of minutes with capacity >= demand when pre-emptions are drawn, not averaged."""
    assert pools.spot is not None
    risk = spot_risk(pools.spot, pools.on_demand, fallback=True)
    hole_s, step = risk.hole_h * 3600, curve.step_s
    minutes = (np.arange(int(step // 60)) + 0.5) * 60
    ok = total = 0
    for run in range(runs):
        rng = np.random.default_rng(run)
        holes: list[float] = []  # pre-emption instants; each hole is [t, t + hole_s)
        steps = zip(curve.replicas, o.spot_per_step, o.on_demand_per_step, strict=True)
        for k, (d, s, n) in enumerate(steps):
            t0 = k * step
            events = rng.poisson(s * risk.preemptions_per_hour * step / 3600)
            holes = [h for h in holes if h + hole_s > t0] + list(t0 + rng.uniform(0, step, events))
            for t in t0 + minutes:
                missing = sum(1 for h in holes if h <= t < h + hole_s)
                ok += o.reserved_replicas + s + n - missing >= d
                total += 1
    return ok / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="benchmarks/results/procurement.json")
    ap.add_argument("--trace", default=str(TRACE.resolve()))
    ap.add_argument("--rate-scale", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.perf_counter()
    ts, ins, outs = load_trace(Path(args.trace))
    span = max(ts) - min(ts)
    day = rates_from_timestamps(ts, bucket_s=span / BUCKETS_PER_DAY)
    day = tuple(r * args.rate_scale for r in day)
    p99 = lambda v: sorted(v)[int(0.99 * len(v))]  # noqa: E731
    traffic = TrafficProfile(
        mean_rps=statistics.fmean(day),
        input_len_mean=round(statistics.fmean(ins)),
        input_len_p99=p99(ins),
        output_len_mean=round(statistics.fmean(outs)),
        output_len_p99=p99(outs),
    )
    cat = load_catalog()
    d = Deployment(
        model=cat.model("llama-3.1-8b"),
        gpu=cat.gpu("h100-sxm"),
        max_model_len=traffic.input_tail + traffic.output_tail,
    )
    slo = SloTargets(ttft_ms=10_000, tpot_ms=50, percentile=99)
    aws = cat.provider("aws")
    od_price = min(q.usd_per_gpu_hour for q in cat.prices_for("h100-sxm", ("aws",)))
    od = PoolSpec(P.ON_DEMAND, od_price, obtain_delay_s=300)
    res = PoolSpec(P.RESERVED, od_price * (1 - (aws.reserved_1y_discount or 0)))
    spot = PoolSpec(
        P.SPOT,
        od_price * (1 - (aws.spot_discount or 0)),
        obtain_delay_s=600,
        preemptions_per_hour=0.02,
        notice_s=120,
    )
    scenarios = {
        "spot": Pools(od, res, spot),
        "spot-max-20": Pools(od, res, replace(spot, max_replicas=20)),
        "spot-10x-preemptions": Pools(od, res, replace(spot, preemptions_per_hour=0.2)),
        "no-spot": Pools(od, res, None),
    }
    result: dict[str, object] = {
        "trace": "mooncake_conversation.jsonl",
        "deployment": d.label(),
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "percentile": slo.percentile},
        "coverage_target": 0.99,
        "lengths": {
            "input_mean": traffic.input_len_mean,
            "input_p99": traffic.input_tail,
            "output_mean": traffic.output_len_mean,
            "output_p99": traffic.output_tail,
        },
        "curve": (
            f"trace hour in {BUCKETS_PER_DAY} buckets stretched to a day of 15-min steps, "
            f"x{args.rate_scale:g} rate, 7 days, log-normal noise sigma 0.1 seed {args.seed}"
        ),
        "curves": {},
    }
    print(f"{d.label()}, SLO TTFT {slo.ttft_ms:g} ms / TPOT {slo.tpot_ms:g} ms at p99")
    for name, diurnal in (("trace-shape", False), ("diurnal", True)):
        rates = week_rates(day, seed=args.seed, diurnal=diurnal)
        curve = demand_curve(d, traffic, slo, rates, step_s=STEP_S)
        mean_r = sum(curve.replicas) / len(curve.replicas)
        print(
            f"\n== {name}: {len(rates)} steps, rate {min(rates):.1f}-{max(rates):.1f} req/s, "
            f"replicas {min(curve.replicas)}-{curve.peak} (mean {mean_r:.1f})"
        )
        per: dict[str, object] = {
            "rate_rps": {"min": min(rates), "mean": statistics.fmean(rates), "max": max(rates)},
            "replicas": {"min": min(curve.replicas), "mean": mean_r, "peak": curve.peak},
            "scenarios": {},
        }
        for sname, pools in scenarios.items():
            cmp = compare_procurement(curve, pools, target=0.99)
            base = {o.policy: o for o in cmp.outcomes}["all-on-demand"].usd_per_week
            peak = {o.policy: o for o in cmp.outcomes}["peak-reserved"].usd_per_week
            print(f"-- {sname}: recommended {cmp.recommended}")
            head = f"{'policy':15} {'res':>4} {'od':>4} {'spot':>4} {'$/week':>10} {'$/Mtok':>7}"
            print(f"{head} {'vs OD':>6} {'vs peak':>7} {'coverage':>9} {'(MC)':>7}  SLO")
            rows = []
            for o in cmp.outcomes:
                star = "*" if o.policy == cmp.recommended else " "
                mc = mc_coverage(curve, o, pools, runs=20) if any(o.spot_per_step) else None
                print(
                    f"{star}{o.policy:14} {o.reserved_replicas:4} {o.on_demand_replicas_peak:4} "
                    f"{o.spot_replicas_peak:4} {o.usd_per_week:10,.0f} "
                    f"{o.usd_per_million_tokens or 0:7.3f} {o.usd_per_week / base - 1:+6.0%} "
                    f"{o.usd_per_week / peak - 1:+7.0%} {o.coverage:9.4f} "
                    f"{'-' if mc is None else f'{mc:.4f}':>7}  "
                    f"{'met' if o.slo_met else 'NOT met'}"
                )
                row = asdict(o)
                del row["on_demand_per_step"], row["spot_per_step"]
                row["coverage_monte_carlo"] = mc
                row["vs_all_on_demand"] = o.usd_per_week / base - 1
                row["vs_peak_reserved"] = o.usd_per_week / peak - 1
                rows.append(row)
            print(f"   {cmp.reason}")
            per["scenarios"][sname] = {  # type: ignore[index]
                "recommended": cmp.recommended,
                "reason": cmp.reason,
                "outcomes": rows,
            }
        result["curves"][name] = per  # type: ignore[index]
    result["wall_s"] = time.perf_counter() - started
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path} in {result['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
