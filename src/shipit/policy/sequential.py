"""A sequential test of error rates for canary analysis: evidence that accumulates over the
whole canary, every step's requests pooled, and that may be looked at as often as wanted.

Errors are rare events. Over a window in which the candidate served ``n_c`` requests and the
baseline ``n_b``, and ``k`` of them failed, each failure fell on the candidate with probability
``pi0 = n_c / (n_c + n_b)`` if both versions fail at the same rate, and with
``pi_r = r n_c / (r n_c + n_b)`` if the candidate fails ``r`` times as often. The likelihood
ratio of the split the window saw (``k_c`` failures on the candidate, ``k_b`` on the baseline)

    L_r = (pi_r / pi0) ** k_c * ((1 - pi_r) / (1 - pi0)) ** k_b

multiplies over windows (one per canary step, each at its own traffic share). Averaged over the
ratios ``RATIOS`` (a mixture: no single effect size has to be guessed), ``Lambda = mean_r prod
L_r`` is, while the candidate fails no more often than the baseline, a non-negative process of
mean at most 1 that does not drift up; by Ville's inequality it ever reaches ``1 / alpha`` with
probability at most ``alpha``, however many times it is looked at. ``p = min(1, 1 / Lambda)``
is an always-valid p-value: the check runs at every look on one ``alpha`` for the whole canary,
where a fixed-sample test must share its ``alpha`` among all looks.

Pure arithmetic (``math`` only): no clock, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Candidate-to-baseline error-rate ratios the mixture weighs equally: from a modest increase
# on a noisy baseline to a version that fails a few percent of requests over a ~0.1 % baseline.
RATIOS: tuple[float, ...] = (1.5, 2.0, 4.0, 8.0, 16.0, 32.0)


def log_likelihood_ratios(
    k_c: int, n_c: int, k_b: int, n_b: int, ratios: Sequence[float] = RATIOS
) -> tuple[float, ...]:
    """Per ratio ``r``, the log of ``L_r`` for one window's failures (see the module's text).
    A window with no failure, or without requests on one side, carries no evidence (zeros)."""
    if not (0 <= k_c <= n_c and 0 <= k_b <= n_b):
        raise ValueError(f"counts out of range: {k_c}/{n_c} vs {k_b}/{n_b}")
    if any(r <= 1.0 for r in ratios):
        raise ValueError(f"ratios must each be above 1 (a worse candidate), got {list(ratios)}")
    if n_c == 0 or n_b == 0 or k_c + k_b == 0:
        return tuple(0.0 for _ in ratios)
    pi0 = n_c / (n_c + n_b)
    out = []
    for r in ratios:
        pi_r = r * n_c / (r * n_c + n_b)
        out.append(k_c * math.log(pi_r / pi0) + k_b * math.log((1.0 - pi_r) / (1.0 - pi0)))
    return tuple(out)


def always_valid_p(log_lrs: Sequence[float]) -> float:
    """``min(1, 1 / mean_r exp(log_lrs[r]))``, computed in log space (no overflow)."""
    if not log_lrs:
        return 1.0
    peak = max(log_lrs)
    log_mean = peak + math.log(sum(math.exp(v - peak) for v in log_lrs) / len(log_lrs))
    return 1.0 if log_mean <= 0.0 else math.exp(-log_mean)


@dataclass(frozen=True, slots=True)
class ErrorEvidence:
    """What earlier canary steps said about errors: the per-ratio log likelihood ratios summed
    over their windows, and their pooled counts (for the rates a reason quotes)."""

    log_lrs: tuple[float, ...] = ()  # empty: no step finished yet (all zeros)
    errors_candidate: int = 0
    requests_candidate: int = 0
    errors_baseline: int = 0
    requests_baseline: int = 0

    def add(self, k_c: int, n_c: int, k_b: int, n_b: int) -> ErrorEvidence:
        """This evidence and one more window's."""
        window = log_likelihood_ratios(k_c, n_c, k_b, n_b)
        before = self.log_lrs or tuple(0.0 for _ in window)
        return ErrorEvidence(
            tuple(a + b for a, b in zip(before, window, strict=True)),
            self.errors_candidate + k_c,
            self.requests_candidate + n_c,
            self.errors_baseline + k_b,
            self.requests_baseline + n_b,
        )

    def p_value(self) -> float:
        return always_valid_p(self.log_lrs)
