"""The sequential errors test: likelihood ratios and the always-valid p-value against values
worked out by hand, evidence pooled over windows, its false-alarm rate under continuous
monitoring, and the errors check it gives the canary analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipit.config.rollout import AnalysisConfig
from shipit.policy.analysis import Verdict, VersionWindow, compare
from shipit.policy.sequential import (
    RATIOS,
    ErrorEvidence,
    always_valid_p,
    log_likelihood_ratios,
)


def test_likelihood_ratios_by_hand() -> None:
    # 2 failures, both on the candidate; 10 requests each side: pi0 = 1/2.
    # r = 2: pi = 20/30 = 2/3, L = (4/3)^2 = 16/9. r = 3: pi = 30/40 = 3/4, L = (3/2)^2 = 9/4.
    lr2, lr3 = log_likelihood_ratios(2, 10, 0, 10, ratios=(2.0, 3.0))
    assert math.exp(lr2) == pytest.approx(16 / 9)
    assert math.exp(lr3) == pytest.approx(9 / 4)
    # One failure on each side, r = 3: (3/4)/(1/2) * (1/4)/(1/2) = 3/4: evidence against.
    [lr] = log_likelihood_ratios(1, 10, 1, 10, ratios=(3.0,))
    assert math.exp(lr) == pytest.approx(3 / 4)
    # Unequal shares: 30 candidate and 90 baseline requests, pi0 = 1/4; r = 4: pi = 120/210
    # = 4/7. One failure on the candidate: (4/7)/(1/4) = 16/7.
    [lr] = log_likelihood_ratios(1, 30, 0, 90, ratios=(4.0,))
    assert math.exp(lr) == pytest.approx(16 / 7)


def test_no_failure_or_an_empty_side_carries_no_evidence() -> None:
    assert log_likelihood_ratios(0, 100, 0, 100) == tuple(0.0 for _ in RATIOS)
    assert log_likelihood_ratios(3, 3, 0, 0) == tuple(0.0 for _ in RATIOS)


def test_bad_counts_and_ratios_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        log_likelihood_ratios(5, 3, 0, 3)
    with pytest.raises(ValueError, match="above 1"):
        log_likelihood_ratios(1, 3, 0, 3, ratios=(1.0, 2.0))


def test_always_valid_p_by_hand() -> None:
    # The mixture of 16/9 and 9/4 is (64 + 81) / 72 / 2 = 145/144... over two: 145/72.
    assert always_valid_p((math.log(16 / 9), math.log(9 / 4))) == pytest.approx(72 / 145)
    assert always_valid_p((0.0, 0.0)) == 1.0
    assert always_valid_p((math.log(0.5), math.log(0.25))) == 1.0  # evidence against: p = 1
    assert always_valid_p(()) == 1.0
    # Huge evidence, no overflow: mean of e^800 and 1 is about e^800 / 2.
    assert always_valid_p((800.0, 0.0)) == pytest.approx(2 * math.exp(-800.0))


def test_evidence_pools_windows() -> None:
    # Two windows, each one failure on the candidate of 10 + 10 requests: per ratio r the
    # likelihood ratio is (2r/(r+1))^2 (pi0 = 1/2, pi = r/(r+1), twice).
    both = ErrorEvidence().add(1, 10, 0, 10).add(1, 10, 0, 10)
    assert (both.errors_candidate, both.requests_candidate) == (2, 20)
    assert (both.errors_baseline, both.requests_baseline) == (0, 20)
    by_hand = [1.44, 16 / 9, 2.56, (16 / 9) ** 2, (32 / 17) ** 2, (64 / 33) ** 2]
    assert [math.exp(v) for v in both.log_lrs] == pytest.approx(by_hand)
    assert both.p_value() == pytest.approx(len(by_hand) / sum(by_hand))
    assert both.p_value() == pytest.approx(0.36939, abs=1e-4)
    assert ErrorEvidence().p_value() == 1.0


def test_false_alarms_under_continuous_monitoring_stay_under_alpha() -> None:
    """Equal error rates, looked at after every window of a 4-step canary: the share of
    canaries in which p ever fell under alpha stays under alpha, where a fixed-sample test
    at alpha on every look would alarm several times as often."""
    rng = np.random.default_rng(11)
    alpha, trials, hits, naive = 0.05, 1500, 0, 0
    shares = [0.01] * 6 + [0.05] * 6 + [0.25] * 6 + [0.5] * 6
    for _ in range(trials):
        evidence = ErrorEvidence()
        alarmed = naive_alarm = False
        for share in shares:
            n_c = int(rng.binomial(200, share))
            n_b = 200 - n_c
            k_c, k_b = int(rng.binomial(n_c, 0.01)), int(rng.binomial(n_b, 0.01))
            evidence = evidence.add(k_c, n_c, k_b, n_b)
            alarmed |= evidence.p_value() < alpha
            # The naive way: the same pooled counts, a one-sided binomial test of k_c given
            # k = k_c + k_b at every look, each at alpha.
            k = evidence.errors_candidate + evidence.errors_baseline
            pi0 = evidence.requests_candidate / (
                evidence.requests_candidate + evidence.requests_baseline
            )
            tail = sum(
                math.comb(k, x) * pi0**x * (1 - pi0) ** (k - x)
                for x in range(evidence.errors_candidate, k + 1)
            )
            naive_alarm |= k > 0 and tail < alpha
        hits += alarmed
        naive += naive_alarm
    assert hits / trials < alpha
    assert naive / trials > 2 * alpha  # why a sequential test is needed


def test_a_candidate_failing_more_often_drives_p_down() -> None:
    rng = np.random.default_rng(3)
    detected = 0
    for _ in range(200):
        evidence = ErrorEvidence()
        for share in (0.05, 0.25, 0.5):
            n_c = int(rng.binomial(1200, share))
            n_b = 1200 - n_c
            k_c, k_b = int(rng.binomial(n_c, 0.021)), int(rng.binomial(n_b, 0.001))
            evidence = evidence.add(k_c, n_c, k_b, n_b)
        detected += evidence.p_value() < 0.005 / 3
    assert detected / 200 > 0.9


def test_the_sequential_errors_check_in_the_analysis_quotes_pooled_figures() -> None:
    config = AnalysisConfig(metrics=["errors"], min_samples=20)
    before = ErrorEvidence().add(3, 100, 1, 900)
    window_c = VersionWindow(requests=300, errors=6)
    window_b = VersionWindow(requests=900, errors=1)
    result = compare(config, window_c, window_b, alpha=1e-4, errors_before=before,
                     errors_alpha=0.001)  # fmt: skip
    [check] = result.checks
    assert (check.n_candidate, check.n_baseline) == (400, 1800)  # both windows pooled
    assert check.candidate == pytest.approx(9 / 400)
    assert check.baseline == pytest.approx(2 / 1800)
    expected = before.add(6, 300, 1, 900).p_value()
    assert check.p_value == pytest.approx(expected) and check.p_value < 0.001
    assert check.alpha == 0.001  # the canary's whole errors budget, not the per-look alpha
    assert result.verdict is Verdict.FAIL
    assert "errors worse" in check.reason and "over the canary" in check.reason
    assert "sequential p=" in check.reason
    # Fisher's test on this window alone (6/300 vs 1/900: p = 0.0013) at the per-look alpha
    # would not have failed it.
    fisher = compare(config, window_c, window_b, alpha=1e-4)
    assert fisher.verdict is Verdict.PASS and fisher.checks[0].p_value == pytest.approx(
        0.0013, abs=1e-4
    )


def test_the_sequential_errors_check_keeps_the_floor() -> None:
    config = AnalysisConfig(metrics=["errors"], min_samples=20, min_error_rate_increase=0.05)
    result = compare(
        config,
        VersionWindow(requests=2000, errors=60),
        VersionWindow(requests=2000, errors=2),
        alpha=1e-6,
        errors_before=ErrorEvidence(),
        errors_alpha=0.01,
    )
    [check] = result.checks
    assert check.p_value is not None and check.p_value < 1e-6  # significant...
    assert check.verdict is Verdict.PASS  # ...but +2.9 points is under the 5-point floor
