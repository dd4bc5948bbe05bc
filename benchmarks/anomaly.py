"""Baseline detector accuracy: precision and recall on injected anomalies, false alarms on normal.

Synthetic one-minute series, seeded and deterministic. Shapes: flat, daily-seasonal (+-40 %) and
daily+weekly (weekend -30 %), each with autocorrelated log-normal noise (AR(1), phi 0.8, sigma
8 %) and 0.5 % single-sample outliers (x3), and a benign growth trend (+3 %/day).
Anomalies are injected after the learning period:

- step: the level moves by 20-80 % (uniform) for 2-4 h; steps under ~30 % are, by design,
  within the detector's noise allowance (4 spreads of 8 % noise);
- drift: a linear ramp to +100 % over 4 h, then back;
- spike: x1.5-x3.5 for 20-40 minutes;
- seasonal: the daily cycle runs 8-12 h out of phase for 12 h (only on seasonal shapes; a
  latency peak at the wrong time of day).

Each anomaly is applied in the bad direction of two metric kinds: a latency (up is bad) and a
throughput (down is bad). An anomaly is *detected* when an alert fires between its start and its
end plus the hold time; an alert episode is a *true positive* when it overlaps such a window.
False alarms are counted on normal series only, per day of evaluated time. Run:

    uv run python benchmarks/anomaly.py [--seeds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shipit.telemetry.baseline import (
    DAY_S,
    HOUR_S,
    BaselineConfig,
    BaselineDetector,
    latency_config,
    throughput_config,
)

STEP_S = 60.0
AR_PHI = 0.8
LEARN_DAYS = 4.0
EVAL_DAYS = 4.0
WEEKLY_DAYS = 28.0  # series with a weekly cycle run long enough for the hour-of-week baseline
KINDS = ("step", "drift", "spike", "seasonal")
SHAPES = ("flat", "daily", "weekly")
RESULTS = Path(__file__).resolve().parent / "results" / "anomaly.json"


@dataclass(frozen=True, slots=True)
class Injected:
    kind: str
    start_s: float
    end_s: float
    magnitude: float  # peak multiplier in the bad direction (seasonal: phase shift in hours)


@dataclass(frozen=True, slots=True)
class Series:
    shape: str
    metric: str  # "latency" or "throughput"
    values: tuple[float, ...]
    anomaly: Injected | None
    eval_from_s: float


def _shape_factor(shape: str, t_s: float, phase_s: float = 0.0) -> float:
    if shape == "flat":
        return 1.0
    daily = 1.0 + 0.4 * math.sin(2 * math.pi * (t_s + phase_s) / DAY_S)
    if shape == "weekly" and int((t_s + 3 * DAY_S) // DAY_S) % 7 >= 5:
        return daily * 0.7  # Saturday and Sunday
    return daily


def _anomaly_factor(a: Injected, shape: str, t_s: float, phase_s: float) -> float:
    """Multiplier in the bad direction (>= 1); the throughput series divide by it."""
    if not a.start_s <= t_s < a.end_s:
        return 1.0
    if a.kind in ("step", "spike"):
        return a.magnitude
    if a.kind == "drift":
        return 1.0 + (a.magnitude - 1.0) * (t_s - a.start_s) / (a.end_s - a.start_s)
    # Seasonal: the cycle as it would be 8-12 h later, relative to what it should be now.
    return _shape_factor(shape, t_s, phase_s) / _shape_factor(shape, t_s)


def make_series(
    rng: random.Random, *, shape: str, metric: str, kind: str | None, trend: bool = False
) -> Series:
    days = WEEKLY_DAYS if shape == "weekly" else LEARN_DAYS + EVAL_DAYS
    n = int(days * DAY_S / STEP_S)
    eval_from_s = (days - EVAL_DAYS) * DAY_S
    anomaly, phase_s = None, rng.uniform(8, 12) * HOUR_S
    if kind is not None:
        duration_s = {
            "step": rng.uniform(2, 4) * HOUR_S,
            "drift": 4 * HOUR_S,
            "spike": rng.uniform(20, 40) * 60,
            "seasonal": 12 * HOUR_S,
        }[kind]
        start = eval_from_s + rng.uniform(0.2, EVAL_DAYS - 1) * DAY_S
        if kind == "seasonal":  # start where the shifted cycle is clearly worse
            start = _worst_phase_start(shape, start, phase_s, metric)
        magnitude = {
            "step": rng.uniform(1.2, 1.8),
            "drift": 2.0,
            "spike": rng.uniform(1.5, 3.5),
            "seasonal": phase_s / HOUR_S,
        }[kind]
        anomaly = Injected(kind, start, start + duration_s, magnitude)
    level = 0.4 if metric == "latency" else 200.0
    values, noise = [], 0.0
    for i in range(n):
        t = i * STEP_S
        # AR(1) noise (phi 0.8, marginal sigma 8 %): real metrics wander, they are not i.i.d.
        noise = AR_PHI * noise + math.sqrt(1 - AR_PHI**2) * rng.gauss(0.0, 0.08)
        v = level * _shape_factor(shape, t) * math.exp(noise)
        if trend:
            v *= 1.0 + 0.03 * t / DAY_S
        if rng.random() < 0.005:
            v *= 3.0 if metric == "latency" else 1 / 3
        if anomaly is not None:
            f = _anomaly_factor(anomaly, shape, t, phase_s)
            # A seasonal shift moves the whole cycle; the others push in the bad direction.
            v = v * f if metric == "latency" or anomaly.kind == "seasonal" else v / f
        values.append(v)
    return Series(shape, metric, tuple(values), anomaly, eval_from_s)


def _worst_phase_start(shape: str, start_s: float, phase_s: float, metric: str) -> float:
    """Align the 12 h shifted window so it covers the part of the day where it hurts most."""
    best, best_bad = start_s, -1.0
    for k in range(24):
        s = start_s + k * HOUR_S
        mid = s + 6 * HOUR_S
        ratio = _shape_factor(shape, mid, phase_s) / _shape_factor(shape, mid)
        bad = ratio if metric == "latency" else 1 / ratio
        if bad > best_bad:
            best, best_bad = s, bad
    return best


@dataclass(frozen=True, slots=True)
class Episode:
    fired_s: float
    cleared_s: float


def run_detector(series: Series, config: BaselineConfig) -> list[Episode]:
    detector = BaselineDetector(config, name=series.metric)
    episodes, fired_s = [], None
    for i, value in enumerate(series.values):
        d = detector.observe(i * STEP_S, value)
        if d.fired:
            fired_s = d.at_s
        elif d.cleared and fired_s is not None:
            episodes.append(Episode(fired_s, d.at_s))
            fired_s = None
    if fired_s is not None:
        episodes.append(Episode(fired_s, len(series.values) * STEP_S))
    return [e for e in episodes if e.cleared_s >= series.eval_from_s]


def _config_for(metric: str) -> BaselineConfig:
    return latency_config() if metric == "latency" else throughput_config()


@dataclass(frozen=True, slots=True)
class KindScore:
    kind: str
    anomalies: int
    detected: int
    alerts: int
    true_alerts: int
    median_delay_min: float | None

    @property
    def recall(self) -> float:
        return self.detected / self.anomalies if self.anomalies else float("nan")

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else float("nan")


def score_kind(kind: str, runs: list[tuple[Series, list[Episode]]], grace_s: float) -> KindScore:
    detected, alerts, true_alerts, delays = 0, 0, 0, []
    for series, episodes in runs:
        a = series.anomaly
        assert a is not None
        hits = [e for e in episodes if a.start_s <= e.fired_s <= a.end_s + grace_s]
        overlapping = [
            e for e in episodes if e.fired_s <= a.end_s + grace_s and e.cleared_s >= a.start_s
        ]
        detected += bool(hits)
        if hits:
            delays.append((hits[0].fired_s - a.start_s) / 60)
        alerts += len(episodes)
        true_alerts += len(overlapping)
    delay = statistics.median(delays) if delays else None
    return KindScore(kind, len(runs), detected, alerts, true_alerts, delay)


def _series_plan(seeds: int) -> list[tuple[str, str, str | None, bool]]:
    plan: list[tuple[str, str, str | None, bool]] = []
    for _ in range(seeds):
        for metric in ("latency", "throughput"):
            for kind in KINDS:
                shapes = ("daily", "weekly") if kind == "seasonal" else ("flat", "daily")
                plan += [(shape, metric, kind, False) for shape in shapes]
            plan += [(shape, metric, None, False) for shape in SHAPES]
            plan.append(("daily", metric, None, True))
    return plan


def run(seeds: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, object]:
    rng = random.Random(20_240_601)
    by_kind: dict[str, list[tuple[Series, list[Episode]]]] = {k: [] for k in KINDS}
    normal_alerts, normal_days, noisy_series, normals = 0, 0.0, 0, 0
    plan = _series_plan(seeds)
    for i, (shape, metric, kind, trend) in enumerate(plan):
        series = make_series(random.Random(rng.random()), shape=shape, metric=metric, kind=kind,
                             trend=trend)  # fmt: skip
        episodes = run_detector(series, _config_for(metric))
        if kind is None:
            normals += 1
            normal_alerts += len(episodes)
            normal_days += EVAL_DAYS
            noisy_series += bool(episodes)
        else:
            by_kind[kind].append((series, episodes))
        progress(f"{i + 1}/{len(plan)} {shape} {metric} {kind or 'normal'}: {len(episodes)} alerts")
    grace_s = latency_config().for_s + latency_config().smoothing_s + 10 * 60
    scores = [score_kind(k, runs, grace_s) for k, runs in by_kind.items()]
    details = [
        {"kind": r.anomaly.kind, "shape": r.shape, "metric": r.metric,
         "magnitude": round(r.anomaly.magnitude, 3), "duration_min": round(
             (r.anomaly.end_s - r.anomaly.start_s) / 60),
         "detected": any(r.anomaly.start_s <= e.fired_s <= r.anomaly.end_s + grace_s
                         for e in eps)}
        for runs in by_kind.values() for r, eps in runs if r.anomaly is not None
    ]  # fmt: skip
    total = KindScore(
        "all",
        sum(s.anomalies for s in scores),
        sum(s.detected for s in scores),
        sum(s.alerts for s in scores) + normal_alerts,
        sum(s.true_alerts for s in scores),
        None,
    )
    return {
        "config": {"latency": asdict(latency_config()), "throughput": asdict(throughput_config())},
        "seeds": seeds,
        "step_s": STEP_S,
        "eval_days_per_series": EVAL_DAYS,
        "kinds": [asdict(s) | {"recall": s.recall, "precision": s.precision} for s in scores],
        "overall": {
            "recall": total.recall,
            "precision": total.precision,
            "anomalies": total.anomalies,
            "detected": total.detected,
            "alerts": total.alerts,
            "true_alerts": total.true_alerts,
        },
        "anomalies": details,
        "normal": {
            "series": normals,
            "alerts": normal_alerts,
            "false_alarms_per_day": normal_alerts / normal_days if normal_days else 0.0,
            "series_with_any_alert": noisy_series,
        },
    }


def _table(result: dict[str, object]) -> str:
    rows = ["kind      anomalies detected recall  alerts true  precision  median delay"]
    for k in result["kinds"]:  # type: ignore[attr-defined]
        delay = "-" if k["median_delay_min"] is None else f"{k['median_delay_min']:.0f} min"
        rows.append(
            f"{k['kind']:<9} {k['anomalies']:>9} {k['detected']:>8} {k['recall']:>6.2f} "
            f"{k['alerts']:>7} {k['true_alerts']:>4} {k['precision']:>10.2f}  {delay:>12}"
        )
    o, n = result["overall"], result["normal"]
    rows.append(
        f"overall   recall {o['recall']:.3f}  precision {o['precision']:.3f} "  # type: ignore[index]
        "(normal-series alerts count as false positives)"
    )
    rows.append(
        f"normal    {n['series']} series, {n['alerts']} alerts, "  # type: ignore[index]
        f"{n['false_alarms_per_day']:.3f} false alarms per series-day, "  # type: ignore[index]
        f"{n['series_with_any_alert']} series with any alert"  # type: ignore[index]
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="series per (kind, shape, metric)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    result = run(args.seeds, progress=(lambda _: None) if args.quiet else print)
    print(_table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
