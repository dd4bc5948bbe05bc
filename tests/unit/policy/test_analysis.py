"""Canary analysis statistics: the tests against independent computations, their error rates
under the null on many draws, and the checks' verdicts with their figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipit.config.rollout import AnalysisConfig
from shipit.policy.analysis import (
    Verdict,
    VersionWindow,
    compare,
    fisher_greater,
    mann_whitney_greater,
)


def brute_u(c: list[float], b: list[float]) -> float:
    """U of the candidate by counting pairs: an independent definition."""
    return sum((x > y) + 0.5 * (x == y) for x in c for y in b)


@pytest.mark.parametrize(
    ("c", "b"),
    [
        ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
        ([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 2.0, 3.0], [2.0, 2.0, 5.0]),
        ([0.3, 0.1, 0.7, 0.7, 0.2], [0.7, 0.05, 0.3]),
    ],
)
def test_u_statistic_matches_pair_counting(c: list[float], b: list[float]) -> None:
    u, _ = mann_whitney_greater(c, b)
    assert u == pytest.approx(brute_u(c, b))


def test_mann_whitney_is_one_sided() -> None:
    low = [1.0 + i * 0.01 for i in range(40)]
    high = [2.0 + i * 0.01 for i in range(40)]
    assert mann_whitney_greater(high, low)[1] < 1e-10
    assert mann_whitney_greater(low, high)[1] > 0.999


def test_all_equal_values_give_no_evidence() -> None:
    assert mann_whitney_greater([1.0] * 30, [1.0] * 30)[1] == 1.0


def test_mann_whitney_false_positive_rate_under_the_null() -> None:
    rng = np.random.default_rng(7)
    trials = 2000
    hits = 0
    for _ in range(trials):
        c = rng.lognormal(0.0, 0.4, 60)
        b = rng.lognormal(0.0, 0.4, 300)
        hits += mann_whitney_greater(c.tolist(), b.tolist())[1] < 0.05
    assert 0.035 < hits / trials < 0.065


def test_fisher_exact_values() -> None:
    # 3 of 3 events land on the candidate's 3 trials out of 6: 1 / C(6, 3).
    assert fisher_greater(3, 3, 0, 3) == pytest.approx(1 / 20)
    # 2 or more of 2 events on 2 of 4 trials: 1 / C(4, 2).
    assert fisher_greater(2, 2, 0, 2) == pytest.approx(1 / 6)
    assert fisher_greater(0, 100, 0, 100) == 1.0
    # The candidate has fewer errors: no evidence it is worse.
    assert fisher_greater(0, 100, 10, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out of range"):
        fisher_greater(5, 3, 0, 3)


def test_fisher_tail_sums_hypergeometric_terms() -> None:
    # P(X >= 2), X ~ Hypergeom(N=10, K=4, n=5):
    # (C(4,2)C(6,3) + C(4,3)C(6,2) + C(4,4)C(6,1)) / C(10,5)
    expected = (6 * 20 + 4 * 15 + 1 * 6) / 252
    assert fisher_greater(2, 5, 2, 5) == pytest.approx(expected)


def window(
    rng: np.random.Generator, n: int, tpot_scale: float = 1.0, errors: int = 0
) -> VersionWindow:
    return VersionWindow(
        ttft_s=tuple(rng.lognormal(math.log(0.2), 0.3, n).tolist()),
        tpot_s=tuple((rng.lognormal(math.log(0.02), 0.2, n) * tpot_scale).tolist()),
        requests=n,
        errors=errors,
        answered=n - errors,
        slo_met=n - errors,
    )


def test_slower_tpot_fails_with_its_figures() -> None:
    rng = np.random.default_rng(1)
    result = compare(AnalysisConfig(), window(rng, 400, 1.3), window(rng, 2000), alpha=1e-4)
    assert result.verdict is Verdict.FAIL
    [failed] = result.failed()
    assert failed.metric == "tpot"
    assert failed.effect == pytest.approx(0.3, abs=0.08)
    assert failed.p_value is not None and failed.p_value < 1e-4
    assert (
        "tpot worse" in result.reason
        and "median" in result.reason
        and "n=400/2000" in result.reason
    )


def test_equal_versions_pass() -> None:
    rng = np.random.default_rng(2)
    result = compare(AnalysisConfig(), window(rng, 400), window(rng, 2000), alpha=1e-4)
    assert result.verdict is Verdict.PASS
    assert {c.metric for c in result.checks} == {"ttft", "tpot", "errors", "goodput"}


def test_significant_but_small_slowdown_is_within_the_floor() -> None:
    rng = np.random.default_rng(3)
    config = AnalysisConfig(min_latency_increase=0.05)
    result = compare(config, window(rng, 20000, 1.02), window(rng, 20000), alpha=1e-3)
    tpot = next(c for c in result.checks if c.metric == "tpot")
    assert tpot.p_value is not None and tpot.p_value < 1e-3  # significant...
    assert tpot.verdict is Verdict.PASS  # ...but 2 % is below the 5 % floor
    assert "within the 5% floor" in tpot.reason


def test_error_share_fails() -> None:
    rng = np.random.default_rng(4)
    result = compare(
        AnalysisConfig(), window(rng, 200, errors=10), window(rng, 2000, errors=2), alpha=1e-4
    )
    assert result.verdict is Verdict.FAIL
    assert {c.metric for c in result.failed()} >= {"errors"}
    assert "errors 10/200 (5.00%)" in result.reason


def test_too_few_samples_is_insufficient_not_a_verdict() -> None:
    rng = np.random.default_rng(5)
    result = compare(
        AnalysisConfig(min_samples=50), window(rng, 20, 3.0), window(rng, 2000), alpha=1e-4
    )
    assert result.verdict is Verdict.INSUFFICIENT
    assert "20 candidate / 2000 baseline samples, 50 needed" in result.reason
