"""Erlang B/C against known values and the exact recurrence; wait tails are consistent."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipit.capacity import erlang_b, erlang_c, wait_exceed_probability, wait_percentile_s


def _recurrence(c: int, a: float) -> float:
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def test_known_values() -> None:
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(10, 8.0) == pytest.approx(0.40918, abs=1e-4)  # standard table value
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 0.0) == 0.0


@pytest.mark.parametrize(("c", "a"), [(6000, 5900.0), (8000, 7000.0), (20000, 19800.0)])
def test_large_systems_match_the_exact_recurrence(c: int, a: float) -> None:
    assert erlang_b(c, a) == pytest.approx(_recurrence(c, a), rel=1e-9)


@given(c=st.integers(1, 300), load=st.floats(0.01, 0.99))
def test_more_servers_less_waiting(c: int, load: float) -> None:
    a = load * c
    assert erlang_c(c + 1, a) <= erlang_c(c, a) + 1e-12


def test_wait_percentile_inverts_exceed_probability() -> None:
    kw = {"servers": 40, "arrival_rate_per_s": 7.0, "service_s": 5.0}
    t = wait_percentile_s(percentile=99.0, **kw)  # type: ignore[arg-type]
    assert t > 0
    assert wait_exceed_probability(wait_s=t, **kw) == pytest.approx(0.01)  # type: ignore[arg-type]


def test_md_c_waits_half_as_long_and_bursts_longer() -> None:
    kw = {"servers": 40, "arrival_rate_per_s": 7.0, "service_s": 5.0, "percentile": 99.0}
    mmc = wait_percentile_s(**kw)  # type: ignore[arg-type]
    assert wait_percentile_s(service_cv=0.0, **kw) == pytest.approx(mmc / 2)  # type: ignore[arg-type]
    assert wait_percentile_s(arrival_cv=2.0, **kw) > mmc  # type: ignore[arg-type]


def test_unstable_queue() -> None:
    assert (
        wait_percentile_s(servers=4, arrival_rate_per_s=1.0, service_s=5.0, percentile=99.0)
        == math.inf
    )
    assert (
        wait_exceed_probability(servers=4, arrival_rate_per_s=1.0, service_s=5.0, wait_s=100.0)
        == 1.0
    )
