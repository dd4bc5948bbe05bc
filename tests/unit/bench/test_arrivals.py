"""Arrival processes: exact constant spacing, seeded randomness, mean rate and burstiness."""

from __future__ import annotations

import numpy as np
import pytest

from shipit.bench.arrivals import arrival_offsets_s, scale_trace_offsets_s
from shipit.core.errors import InvalidRequestError


def test_constant_rate_is_evenly_spaced() -> None:
    assert arrival_offsets_s(kind="constant", rate_rps=4, count=5) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("kind", ["poisson", "gamma"])
def test_random_processes_are_seeded_and_keep_the_mean_rate(kind: str) -> None:
    a = arrival_offsets_s(kind=kind, rate_rps=10, count=20_000, burstiness=0.5, seed=3)
    assert a == arrival_offsets_s(kind=kind, rate_rps=10, count=20_000, burstiness=0.5, seed=3)
    assert a != arrival_offsets_s(kind=kind, rate_rps=10, count=20_000, burstiness=0.5, seed=4)
    mean_gap = float(np.mean(np.diff(a)))
    assert mean_gap == pytest.approx(0.1, rel=0.03)


@pytest.mark.parametrize(("burstiness", "cv"), [(0.25, 2.0), (1.0, 1.0), (4.0, 0.5)])
def test_gamma_burstiness_sets_the_coefficient_of_variation(burstiness: float, cv: float) -> None:
    gaps = np.diff(arrival_offsets_s(kind="gamma", rate_rps=5, count=40_000, burstiness=burstiness))
    assert float(np.std(gaps) / np.mean(gaps)) == pytest.approx(cv, rel=0.05)


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(InvalidRequestError) as rate:
        arrival_offsets_s(kind="poisson", rate_rps=0, count=3)
    assert rate.value.field == "rate"
    with pytest.raises(InvalidRequestError) as kind:
        arrival_offsets_s(kind="uniform", rate_rps=1, count=3)
    assert kind.value.field == "arrival"
    assert arrival_offsets_s(kind="poisson", rate_rps=1, count=0) == []


def test_trace_offsets_start_at_zero_and_scale_with_speed() -> None:
    assert scale_trace_offsets_s([10.0, 11.0, 14.0], speed=2.0) == [0.0, 0.5, 2.0]
    with pytest.raises(InvalidRequestError):
        scale_trace_offsets_s([1.0], speed=0)
