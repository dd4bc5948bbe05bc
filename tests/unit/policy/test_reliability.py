"""Retry budget and outlier ejection as pure decisions driven by a sequence of ticks."""

from __future__ import annotations

from typing import Any

import pytest

from shipit.config.gateway import OutlierConfig, RetryConfig
from shipit.policy.reliability import (
    OutcomeSnapshot,
    OutlierState,
    RetryBudgetState,
    RetrySnapshot,
    classify_status,
    decide_outlier,
    decide_retry,
    deposit,
    initial_budget,
)


def retries(**kw: Any) -> RetryConfig:
    return RetryConfig.model_validate(kw)


def test_retry_budget_allows_ratio_of_traffic_plus_floor() -> None:
    config = retries(budget_ratio=0.1, budget_min_per_s=1.0)
    state = RetryBudgetState(balance=2.0)
    codes = []
    for _ in range(3):
        d, state = decide_retry(config, RetrySnapshot(0.0, 1), state)
        codes.append(d.reason_code)
    assert codes == ["retry", "retry", "budget_exhausted"]
    for _ in range(10):
        state = deposit(config, 0.0, state)  # ten requests deposit one retry
    d, state = decide_retry(config, RetrySnapshot(0.0, 1), state)
    assert d.allowed and not decide_retry(config, RetrySnapshot(0.0, 1), state)[0].allowed
    d, state = decide_retry(config, RetrySnapshot(1.0, 1), state)  # a second deposits min_per_s
    assert d.allowed and d.balance == pytest.approx(0.0)
    assert not decide_retry(config, RetrySnapshot(1.0, 1), state)[0].allowed


def test_max_attempts_comes_before_the_budget_and_spends_nothing() -> None:
    config = retries(max_attempts=2)
    state = initial_budget(config)
    d, after = decide_retry(config, RetrySnapshot(0.0, 2), state)
    assert (d.allowed, d.reason_code, after) == (False, "max_attempts", state)
    d, after = decide_retry(config, RetrySnapshot(0.0, 1), state)
    assert d.allowed and after.balance == state.balance - 1


def test_the_budget_is_capped() -> None:
    config = retries(budget_ratio=1.0, budget_min_per_s=1.0)
    state = initial_budget(config)
    for t in range(100):
        state = deposit(config, float(t), state)
    assert state.balance == 10.0


# ----- outlier ejection ---------------------------------------------------------------------


def outcome(
    rid: str, result: str, now: float = 0.0, fleet: int = 4, why: str = "x"
) -> OutcomeSnapshot:
    return OutcomeSnapshot(now, rid, result, fleet, why)  # type: ignore[arg-type]


def run(config: OutlierConfig, steps: list[OutcomeSnapshot]) -> tuple[list[str], OutlierState]:
    state = OutlierState()
    codes = []
    for snap in steps:
        d, state = decide_outlier(config, snap, state)
        codes.append(d.reason_code)
    return codes, state


def test_outlier_ejects_after_consecutive_failures_with_backoff() -> None:
    config = OutlierConfig(consecutive_failures=2, base_ejection_s=5, max_ejection_s=8)
    codes, state = run(config, [outcome("a", "failed"), outcome("a", "ok"), outcome("a", "failed")])
    assert codes == ["counted", "reset", "counted"]
    d, state = decide_outlier(config, outcome("a", "failed", why="connect refused"), state)
    assert d.reason_code == "ejected" and d.ejection is not None
    assert d.ejection.until_s == 5.0 and "connect refused" in d.ejection.reason
    record = state.get("a")
    assert record is not None and record.ejected(4.9) and not record.ejected(5.0)
    _, state = decide_outlier(config, outcome("a", "failed", now=6.0), state)
    d, state = decide_outlier(config, outcome("a", "failed", now=6.0), state)
    assert d.ejection is not None and d.ejection.until_s == 6.0 + 8.0  # 10 s doubled, capped at 8


@pytest.mark.parametrize(
    ("steps", "codes"),
    [
        # the fraction cap: one of two may go, not both
        (
            [outcome("a", "failed", fleet=2), outcome("b", "failed", fleet=2)],
            ["ejected", "fraction_cap"],
        ),
        # a fleet of one never ejects its only replica
        ([outcome("solo", "failed", fleet=1)], ["fraction_cap"]),
        # failures while ejected are counted, not ejected again
        ([outcome("a", "failed"), outcome("a", "failed", now=1.0)], ["ejected", "already_ejected"]),
    ],
)
def test_outlier_limits(steps: list[OutcomeSnapshot], codes: list[str]) -> None:
    assert run(OutlierConfig(consecutive_failures=1, max_ejected_fraction=0.5), steps)[0] == codes


def test_forgetting_a_replica_drops_its_record() -> None:
    _, state = run(OutlierConfig(), [outcome("a", "failed"), outcome("b", "failed")])
    assert [r.replica_id for r in state.without("a").replicas] == ["b"]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_4xx_is_never_retried_and_leaves_the_budget_alone(status: int) -> None:
    state = RetryBudgetState(balance=5.0)
    d, after = decide_retry(retries(), RetrySnapshot(0.0, 1, status), state)
    assert (d.allowed, d.reason_code) == (False, "client_error_no_retry")
    assert f"HTTP {status}" in d.reason and after == state


@pytest.mark.parametrize("status", [None, 500, 502, 503])
def test_a_5xx_or_no_answer_is_retried_from_the_budget(status: int | None) -> None:
    d, after = decide_retry(retries(), RetrySnapshot(0.0, 1, status), RetryBudgetState(5.0))
    assert (d.allowed, d.reason_code) == (True, "retry") and after.balance == 4.0


def test_classify_status() -> None:
    assert [classify_status(s) for s in (200, 302, 400, 422, 499, 500, 503)] == [
        "ok",
        "ok",
        "client_error",
        "client_error",
        "client_error",
        "failed",
        "failed",
    ]


def test_a_client_error_neither_counts_nor_resets_a_failure_streak() -> None:
    config = OutlierConfig(consecutive_failures=2, max_ejected_fraction=1.0)
    state = OutlierState()
    d, state = decide_outlier(config, OutcomeSnapshot(0.0, "a", "failed", 2, "connect"), state)
    assert d.reason_code == "counted"
    d, after = decide_outlier(
        config, OutcomeSnapshot(0.0, "a", "client_error", 2, "HTTP 400"), state
    )
    assert d.reason_code == "client_error" and after == state and d.ejection is None
    d, state = decide_outlier(config, OutcomeSnapshot(0.0, "a", "failed", 2, "connect"), after)
    assert d.reason_code == "ejected"
