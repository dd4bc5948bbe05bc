"""Canary analysis: is a candidate version worse than the baseline over the same window?

Pure statistics on two windows of per-request figures (``VersionWindow``): latency
distributions (TTFT, TPOT) are compared with a one-sided Mann-Whitney U test (no assumption on
their shape, ties corrected, normal approximation, so each side needs ``min_samples``), error
rates and goodput with a one-sided exact test on the 2x2 table (Fisher's, the hypergeometric
tail). During a canary, errors are instead judged by a sequential test over every step so far
(``policy.sequential``: an always-valid p-value on the pooled counts, so it needs no share of
its ``alpha`` per look); Fisher's test remains for a window judged once against a fixed one
(after the switch).

A check fails only when the difference is both significant at ``alpha`` *and* larger than a
floor the user sets (``min_latency_increase`` ...): with many requests a 0.5 % slowdown is
significant, and nobody wants a rollback for it. Only "worse" counts (one-sided): a candidate
that is faster, or less loaded at a small traffic share, passes.

Each check returns its figures (medians, rates, effect, p-value, sample sizes) so a rollback's
reason can quote them. No clock, no IO; numpy and ``math`` only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shipit.config.rollout import AnalysisConfig
from shipit.policy.sequential import ErrorEvidence


class Verdict(enum.Enum):
    PASS = "pass"  # no significant, material degradation
    FAIL = "fail"  # worse: significant and past the floor
    INSUFFICIENT = "insufficient"  # too few samples on one side to judge


@dataclass(frozen=True, slots=True)
class VersionWindow:
    """What one version served over the analysis window: latencies of answered streams,
    attempts and their failures (5xx, connection errors, broken streams), answers meeting the
    SLO (goodput)."""

    ttft_s: tuple[float, ...] = ()
    tpot_s: tuple[float, ...] = ()
    requests: int = 0  # attempts that ended (ok or failed)
    errors: int = 0
    answered: int = 0  # 2xx answers
    slo_met: int = 0  # 2xx answers within the SLO


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """One metric's comparison, with the figures a person needs to believe it."""

    metric: str  # ttft, tpot, errors, goodput
    verdict: Verdict
    candidate: float  # median seconds, or a rate
    baseline: float
    effect: float  # relative latency increase, or rate difference (worse is positive)
    p_value: float | None
    alpha: float
    n_candidate: int
    n_baseline: int
    reason: str


@dataclass(frozen=True, slots=True)
class Analysis:
    verdict: Verdict
    checks: tuple[MetricCheck, ...]
    reason: str

    def failed(self) -> tuple[MetricCheck, ...]:
        return tuple(c for c in self.checks if c.verdict is Verdict.FAIL)


# ----- the tests ---------------------------------------------------------------------------


def _ranks(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Average ranks (1-based) of ``values`` and the tie term sum(t^3 - t)."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    n = len(values)
    # Boundaries of runs of equal values.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    t = (ends - starts).astype(float)
    return ranks, float(np.sum(t**3 - t))


def mann_whitney_greater(
    candidate: Sequence[float], baseline: Sequence[float]
) -> tuple[float, float]:
    """One-sided Mann-Whitney U: (U of the candidate, p-value that the candidate's values tend
    to be larger). Normal approximation with tie and continuity corrections."""
    c = np.asarray(candidate, dtype=float)
    b = np.asarray(baseline, dtype=float)
    n1, n2 = len(c), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_greater needs values on both sides")
    ranks, ties = _ranks(np.concatenate([c, b]))
    u = float(np.sum(ranks[:n1]) - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mean = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return u, 1.0  # every value equal: no evidence either way
    z = (u - mean - 0.5) / math.sqrt(var)
    return u, 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(k_c: int, n_c: int, k_b: int, n_b: int) -> float:
    """One-sided Fisher exact test: p-value that the candidate's rate k_c/n_c exceeds the
    baseline's k_b/n_b (the probability of k_c or more of the k_c+k_b events falling on the
    candidate's n_c trials by chance)."""
    if not (0 <= k_c <= n_c and 0 <= k_b <= n_b):
        raise ValueError(f"counts out of range: {k_c}/{n_c} vs {k_b}/{n_b}")
    total, events = n_c + n_b, k_c + k_b
    if events == 0 or n_c == 0 or n_b == 0:
        return 1.0
    top = min(events, n_c)
    denom = _log_comb(total, n_c)
    logs = [
        _log_comb(events, x) + _log_comb(total - events, n_c - x) - denom
        for x in range(k_c, top + 1)
        if n_c - x <= total - events
    ]
    if not logs:
        return 0.0
    peak = max(logs)
    return min(1.0, math.exp(peak) * sum(math.exp(v - peak) for v in logs))


# ----- the checks --------------------------------------------------------------------------


def _latency(
    metric: str,
    cand: tuple[float, ...],
    base: tuple[float, ...],
    config: AnalysisConfig,
    alpha: float,
) -> MetricCheck:
    n_c, n_b = len(cand), len(base)
    if n_c < config.min_samples or n_b < config.min_samples:
        return MetricCheck(
            metric,
            Verdict.INSUFFICIENT,
            float(np.median(cand)) if cand else math.nan,
            float(np.median(base)) if base else math.nan,
            0.0,
            None,
            alpha,
            n_c,
            n_b,
            f"{metric}: {n_c} candidate / {n_b} baseline samples, {config.min_samples} needed "
            "on each side",
        )
    med_c, med_b = float(np.median(cand)), float(np.median(base))
    effect = med_c / med_b - 1.0 if med_b > 0 else 0.0
    _, p = mann_whitney_greater(cand, base)
    worse = p < alpha and effect > config.min_latency_increase
    figures = (
        f"median {med_c * 1e3:.1f} ms vs {med_b * 1e3:.1f} ms ({effect:+.1%}), "
        f"Mann-Whitney p={p:.2g} (alpha {alpha:.2g}), n={n_c}/{n_b}"
    )
    if worse:
        why = f"{metric} worse: {figures}; floor {config.min_latency_increase:.0%}"
    elif p < alpha:
        why = f"{metric} within the {config.min_latency_increase:.0%} floor: {figures}"
    else:
        why = f"{metric} not worse: {figures}"
    verdict = Verdict.FAIL if worse else Verdict.PASS
    return MetricCheck(metric, verdict, med_c, med_b, effect, p, alpha, n_c, n_b, why)


def _rate(
    metric: str,
    k_c: int,
    n_c: int,
    k_b: int,
    n_b: int,
    floor: float,
    config: AnalysisConfig,
    alpha: float,
    *,
    bad_is: str,
) -> MetricCheck:
    """``k`` counts the bad outcome (errors, or answers that missed the SLO)."""
    if n_c < config.min_samples or n_b < config.min_samples:
        rate_c = k_c / n_c if n_c else math.nan
        rate_b = k_b / n_b if n_b else math.nan
        return MetricCheck(
            metric,
            Verdict.INSUFFICIENT,
            rate_c,
            rate_b,
            0.0,
            None,
            alpha,
            n_c,
            n_b,
            f"{metric}: {n_c} candidate / {n_b} baseline requests, {config.min_samples} needed "
            "on each side",
        )
    rate_c, rate_b = k_c / n_c, k_b / n_b
    effect = rate_c - rate_b
    p = fisher_greater(k_c, n_c, k_b, n_b)
    worse = p < alpha and effect > floor
    figures = (
        f"{bad_is} {k_c}/{n_c} ({rate_c:.2%}) vs {k_b}/{n_b} ({rate_b:.2%}), "
        f"Fisher p={p:.2g} (alpha {alpha:.2g})"
    )
    if worse:
        why = f"{metric} worse: {figures}; floor +{floor:.2%}"
    else:
        why = f"{metric} not worse: {figures}"
    verdict = Verdict.FAIL if worse else Verdict.PASS
    return MetricCheck(metric, verdict, rate_c, rate_b, effect, p, alpha, n_c, n_b, why)


def _sequential_errors(
    candidate: VersionWindow,
    baseline: VersionWindow,
    before: ErrorEvidence,
    config: AnalysisConfig,
    alpha: float,
) -> MetricCheck:
    """Errors over the whole canary: the earlier steps' evidence and this window's."""
    now = before.add(candidate.errors, candidate.requests, baseline.errors, baseline.requests)
    k_c, n_c = now.errors_candidate, now.requests_candidate
    k_b, n_b = now.errors_baseline, now.requests_baseline
    if n_c < config.min_samples or n_b < config.min_samples:
        return MetricCheck(
            "errors",
            Verdict.INSUFFICIENT,
            k_c / n_c if n_c else math.nan,
            k_b / n_b if n_b else math.nan,
            0.0,
            None,
            alpha,
            n_c,
            n_b,
            f"errors: {n_c} candidate / {n_b} baseline requests, {config.min_samples} needed "
            "on each side",
        )
    rate_c, rate_b = k_c / n_c, k_b / n_b
    effect = rate_c - rate_b
    p = now.p_value()
    floor = config.min_error_rate_increase
    worse = p < alpha and effect > floor
    figures = (
        f"errors {k_c}/{n_c} ({rate_c:.2%}) vs {k_b}/{n_b} ({rate_b:.2%}) over the canary, "
        f"sequential p={p:.2g} (alpha {alpha:.2g})"
    )
    why = (
        f"errors worse: {figures}; floor +{floor:.2%}" if worse else f"errors not worse: {figures}"
    )
    verdict = Verdict.FAIL if worse else Verdict.PASS
    return MetricCheck("errors", verdict, rate_c, rate_b, effect, p, alpha, n_c, n_b, why)


def compare(
    config: AnalysisConfig,
    candidate: VersionWindow,
    baseline: VersionWindow,
    *,
    alpha: float,
    errors_before: ErrorEvidence | None = None,
    errors_alpha: float | None = None,
) -> Analysis:
    """Every configured check; FAIL if any fails, else INSUFFICIENT if any lacks samples,
    else PASS. ``alpha`` is the significance of each single check (the caller shares its
    false-rollback budget among checks and looks). With ``errors_before`` (a canary: what its
    earlier steps said), errors are judged by the sequential test at ``errors_alpha``, the
    budget for the whole canary, instead of by Fisher's test on this window alone."""
    checks: list[MetricCheck] = []
    for metric in config.metrics:
        if metric == "ttft":
            checks.append(_latency("ttft", candidate.ttft_s, baseline.ttft_s, config, alpha))
        elif metric == "tpot":
            checks.append(_latency("tpot", candidate.tpot_s, baseline.tpot_s, config, alpha))
        elif metric == "errors" and errors_before is not None:
            level = alpha if errors_alpha is None else errors_alpha
            checks.append(_sequential_errors(candidate, baseline, errors_before, config, level))
        elif metric == "errors":
            checks.append(
                _rate(
                    "errors",
                    candidate.errors,
                    candidate.requests,
                    baseline.errors,
                    baseline.requests,
                    config.min_error_rate_increase,
                    config,
                    alpha,
                    bad_is="errors",
                )
            )
        else:  # goodput: the share of answers that missed the SLO
            checks.append(
                _rate(
                    "goodput",
                    candidate.answered - candidate.slo_met,
                    candidate.answered,
                    baseline.answered - baseline.slo_met,
                    baseline.answered,
                    config.min_goodput_drop,
                    config,
                    alpha,
                    bad_is="missed the SLO",
                )
            )
    failed = [c for c in checks if c.verdict is Verdict.FAIL]
    short = [c for c in checks if c.verdict is Verdict.INSUFFICIENT]
    if failed:
        return Analysis(Verdict.FAIL, tuple(checks), "; ".join(c.reason for c in failed))
    if short:
        return Analysis(Verdict.INSUFFICIENT, tuple(checks), "; ".join(c.reason for c in short))
    return Analysis(Verdict.PASS, tuple(checks), "; ".join(c.reason for c in checks))
