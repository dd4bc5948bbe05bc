"""Rollout benchmark: how often a bad candidate is caught, how much traffic it gets first, and
how often an equal candidate is rolled back anyway, side by side with a fixed-threshold
analysis like Flagger's.

Every trial is one canary rollout in simulated time (``shipit.sim.rollout``): Poisson traffic
at ``--rate`` requests/s, steps 1 -> 5 -> 25 -> 50 % with a 60 s bake each, judged every 10 s.
Both versions answer with per-request TTFT and TPOT drawn around the roofline's medians for
Llama-3.1-8B on an H100 (log-normal spread), and the candidate is degraded by a given amount:
TPOT or TTFT slower, a share of requests failing (on top of the 0.1 % both versions fail), or
the same model on a slower GPU (A100).
The same seeds drive the two judges:

- **shipit**: ``policy.rollout`` with ``policy.analysis`` (one-sided Mann-Whitney on TTFT/TPOT
  against the baseline over the same window; errors by the sequential test over the whole
  canary, ``policy.sequential``; at least 20 samples per side, false-rollback budget 0.5 % per
  rollout, rollback when also past a 5 % / 0.5-point floor);
- **fixed**: Flagger's model: every interval, the canary's own P99 TTFT and P99 TPOT over that
  interval must stay under fixed thresholds and its success rate over 99 %; a failed check
  counts, ``--fixed-max-failures`` failed checks roll back. Run twice: thresholds 1.2x and
  1.5x the baseline's true P99 (a user who knows the baseline well). Intervals in which the
  canary had no request are skipped (Flagger counts "no values" as a failed check: this is
  kinder to it).

Reports per degradation and judge: detection rate, median and P90 of the requests the bad
candidate served before rollback (detected trials), median time to rollback; for the equal
candidate, the false-rollback rate. Writes ``benchmarks/results/rollouts.json``.

Run: ``uv run python benchmarks/rollouts.py [--trials 200] [--equal-trials 1000] [--rate 20]``;
``--quick`` (50 and 300 trials: a smoke run of about a minute) writes to ``rollouts_quick.json``
unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from shipit.config.rollout import AnalysisConfig, RolloutSpec, VersionConfig
from shipit.sim.rollout import VersionModel, run_trial, version_model

RESULTS = Path(__file__).parent / "results" / "rollouts.json"
STEPS = [1.0, 5.0, 25.0, 50.0]
BAKE_S = 60.0
INTERVAL_S = 10.0
Z99 = 2.3263  # the standard normal's 99th percentile
BASE_ERRORS = 0.001  # both versions fail 0.1 % of requests (client resets, the odd 5xx)


def spec() -> RolloutSpec:
    return RolloutSpec(
        deployment="bench",
        baseline="v1",
        candidate=VersionConfig(name="v2"),
        steps_percent=STEPS,
        bake_s=BAKE_S,
        keep_old_s=0.0,
        analysis=AnalysisConfig(interval_s=INTERVAL_S, metrics=["ttft", "tpot", "errors"]),
    )


def scenarios(base: VersionModel) -> list[tuple[str, str, VersionModel]]:
    slow_gpu = version_model("A100", "llama-3.1-8b").scaled(error_share=BASE_ERRORS)
    out = [("equal", "none", base)]
    for pct in (5, 10, 20, 50):
        out.append((f"tpot +{pct}%", "tpot", base.scaled(tpot=1 + pct / 100)))
    for pct in (10, 25, 50):
        out.append((f"ttft +{pct}%", "ttft", base.scaled(ttft=1 + pct / 100)))
    for share in (0.005, 0.01, 0.02, 0.05):
        worse = base.scaled(error_share=BASE_ERRORS + share)
        out.append((f"errors +{share:.1%}", "errors", worse))
    out.append(("A100 instead of H100", "gpu", slow_gpu))
    return out


# ----- the fixed-threshold judge (Flagger's model) ------------------------------------------


def fixed_trial(
    baseline: VersionModel,
    candidate: VersionModel,
    *,
    rate_per_s: float,
    seed: int,
    factor: float,
    max_failures: int,
    min_success: float = 0.99,
) -> dict[str, Any]:
    """One rollout judged by fixed thresholds on the canary alone."""
    rng = np.random.default_rng(seed)
    p99_ttft = baseline.ttft_median_s * math.exp(Z99 * baseline.ttft_sigma) * factor
    p99_tpot = baseline.tpot_median_s * math.exp(Z99 * baseline.tpot_sigma) * factor
    failures = exposed = 0
    now = 0.0
    for percent in STEPS:
        step_end = now + BAKE_S
        while now < step_end:
            n = int(rng.poisson(rate_per_s * INTERVAL_S))
            k = int(rng.binomial(n, percent / 100.0))
            exposed += k
            now += INTERVAL_S
            if k == 0:
                continue
            errors = int(rng.binomial(k, candidate.error_share)) if candidate.error_share else 0
            ok = k - errors
            failed = (ok / k) < min_success
            if ok:
                ttft = rng.lognormal(math.log(candidate.ttft_median_s), candidate.ttft_sigma, ok)
                tpot = rng.lognormal(math.log(candidate.tpot_median_s), candidate.tpot_sigma, ok)
                failed |= float(np.quantile(ttft, 0.99)) > p99_ttft
                failed |= float(np.quantile(tpot, 0.99)) > p99_tpot
            failures += failed
            if failures >= max_failures:
                return {"rolled_back": True, "exposed": exposed, "ended_s": now}
    return {"rolled_back": False, "exposed": exposed, "ended_s": now}


def ours_trial(
    base: VersionModel, cand: VersionModel, *, rate_per_s: float, seed: int
) -> dict[str, Any]:
    t = run_trial(spec(), base, cand, rate_per_s=rate_per_s, seed=seed, tick_s=INTERVAL_S / 2)
    return {
        "rolled_back": t.phase.value == "rolled_back",
        "exposed": t.exposed,
        "ended_s": t.ended_s,
        "reason": t.reason,
    }


def summarize(rows: list[dict[str, Any]], degraded: bool) -> dict[str, Any]:
    caught = [r for r in rows if r["rolled_back"]]
    out: dict[str, Any] = {"trials": len(rows), "rollbacks": len(caught)}
    out["rollback_rate"] = len(caught) / len(rows)
    if caught:
        exposed = np.array([r["exposed"] for r in caught])
        out["exposed_median"] = float(np.median(exposed))
        out["exposed_p90"] = float(np.quantile(exposed, 0.9))
        out["time_to_rollback_median_s"] = float(np.median([r["ended_s"] for r in caught]))
    if degraded:
        missed = [r for r in rows if not r["rolled_back"]]
        out["missed"] = len(missed)
    else:
        out["promoted_median_s"] = float(
            np.median([r["ended_s"] for r in rows if not r["rolled_back"]] or [math.nan])
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per degraded scenario")
    ap.add_argument("--equal-trials", type=int, default=1000, help="trials of equal versions")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--fixed-max-failures", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS}")
    ap.add_argument(
        "--quick", action="store_true", help="50 trials per scenario, 300 equal: a smoke run"
    )
    args = ap.parse_args()
    if args.quick:
        args.trials, args.equal_trials = 50, 300
    if args.out is None:
        args.out = RESULTS.with_name("rollouts_quick.json") if args.quick else RESULTS
    base = version_model("H100", "llama-3.1-8b").scaled(error_share=BASE_ERRORS)
    judges = {
        "shipit": lambda b, c, s: ours_trial(b, c, rate_per_s=args.rate, seed=s),
        "fixed_1.2x": lambda b, c, s: fixed_trial(
            b, c, rate_per_s=args.rate, seed=s, factor=1.2, max_failures=args.fixed_max_failures
        ),
        "fixed_1.5x": lambda b, c, s: fixed_trial(
            b, c, rate_per_s=args.rate, seed=s, factor=1.5, max_failures=args.fixed_max_failures
        ),
    }
    results: list[dict[str, Any]] = []
    started = time.time()
    header = (
        f"{'candidate':<22}{'judge':<12}{'rollback':>9}{'exposed p50':>13}{'p90':>8}{'t p50 s':>9}"
    )
    print(header)
    for name, kind, cand in scenarios(base):
        n = args.equal_trials if kind == "none" else args.trials
        for judge, run in judges.items():
            rows = [run(base, cand, seed) for seed in range(n)]
            summary = summarize(rows, degraded=kind != "none")
            example = next((r.get("reason") for r in rows if r["rolled_back"]), None)
            results.append(
                {"candidate": name, "kind": kind, "judge": judge, **summary, "example": example}
            )
            print(
                f"{name:<22}{judge:<12}{summary['rollback_rate']:>9.1%}"
                f"{summary.get('exposed_median', math.nan):>13.0f}"
                f"{summary.get('exposed_p90', math.nan):>8.0f}"
                f"{summary.get('time_to_rollback_median_s', math.nan):>9.0f}",
                flush=True,
            )
    doc = {
        "setup": {
            "model": "llama-3.1-8b",
            "gpu": "H100",
            "baseline": {
                "ttft_median_s": base.ttft_median_s,
                "tpot_median_s": base.tpot_median_s,
                "ttft_sigma": base.ttft_sigma,
                "tpot_sigma": base.tpot_sigma,
            },
            "rate_per_s": args.rate,
            "steps_percent": STEPS,
            "bake_s": BAKE_S,
            "interval_s": INTERVAL_S,
            "shipit_analysis": spec().analysis.model_dump(),
            "fixed_max_failures": args.fixed_max_failures,
            "trials": args.trials,
            "equal_trials": args.equal_trials,
            "wall_s": round(time.time() - started, 1),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
