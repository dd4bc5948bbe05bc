"""Retry budget and outlier ejection driven by a sequence of ticks (``now_s`` passed in)."""

from __future__ import annotations

from shipit.config.gateway import OutlierConfig
from shipit.policy.reliability import OutlierDetector, RetryBudget


def test_retry_budget_allows_ratio_of_traffic_plus_floor() -> None:
    b = RetryBudget(ratio=0.1, min_per_s=1.0, cap=2.0)
    assert b.try_retry(0.0) and b.try_retry(0.0) and not b.try_retry(0.0)
    for _ in range(10):
        b.on_request(0.0)  # ten requests deposit one retry
    assert b.try_retry(0.0) and not b.try_retry(0.0)
    assert b.try_retry(1.0)  # a second of time deposits min_per_s
    assert not b.try_retry(1.0)


def test_outlier_ejects_after_consecutive_failures_with_backoff() -> None:
    d = OutlierDetector(OutlierConfig(consecutive_failures=2, base_ejection_s=5, max_ejection_s=8))
    assert d.on_failure("a", now_s=0.0, fleet_size=4, why="x") is None
    d.on_success("a")
    assert d.on_failure("a", now_s=0.0, fleet_size=4, why="x") is None
    e = d.on_failure("a", now_s=0.0, fleet_size=4, why="connect refused")
    assert e is not None and e.until_s == 5.0 and "connect refused" in e.reason
    assert d.ejected_until("a", 4.9) == 5.0 and d.ejected_until("a", 5.0) is None
    d.on_failure("a", now_s=6.0, fleet_size=4, why="x")
    e = d.on_failure("a", now_s=6.0, fleet_size=4, why="x")
    assert e is not None and e.until_s == 6.0 + 8.0  # 10 s doubled, capped at 8


def test_outlier_never_ejects_past_the_fraction() -> None:
    d = OutlierDetector(OutlierConfig(consecutive_failures=1, max_ejected_fraction=0.5))
    assert d.on_failure("a", now_s=0.0, fleet_size=2, why="x") is not None
    assert d.on_failure("b", now_s=0.0, fleet_size=2, why="x") is None
    assert (
        OutlierDetector(OutlierConfig(consecutive_failures=1)).on_failure(
            "solo", now_s=0.0, fleet_size=1, why="x"
        )
        is None
    )
