"""Replica sizing: monotone in SLO and traffic (properties), sane autoscaling, clear failures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipit.capacity import Deployment, SloTargets, TrafficProfile, load_catalog, size_replicas
from shipit.core.errors import CapacityError

CATALOG = load_catalog()
D8 = Deployment(
    model=CATALOG.model("llama-3.1-8b"), gpu=CATALOG.gpu("h100-sxm"), max_model_len=8192
)
D70 = Deployment(
    model=CATALOG.model("llama-3.1-70b"),
    gpu=CATALOG.gpu("h200"),
    tp=2,
    dtype="fp8",
    max_model_len=8192,
)


def _traffic(rps: float, cv: float = 1.0) -> TrafficProfile:
    return TrafficProfile(
        mean_rps=rps,
        arrival_cv=cv,
        input_len_mean=1000,
        input_len_p99=3000,
        output_len_mean=200,
        output_len_p99=600,
    )


def test_example_plan_is_consistent() -> None:
    p = size_replicas(D8, _traffic(20.0), SloTargets(ttft_ms=800, tpot_ms=40))
    assert p.replicas_peak >= 1 and p.gpus_peak == p.replicas_peak
    assert p.tpot_tail_ms <= 40 and p.ttft_tail_ms + p.queue_wait_tail_ms <= 800
    assert 0 < p.utilization_at_peak < 1
    a = p.autoscaling
    assert 1 <= a.target_concurrency_per_replica <= p.concurrency_per_replica
    assert a.min_replicas <= a.max_replicas == p.replicas_peak
    assert a.scale_down_delay_s >= 300 and a.cold_start_s > 0
    assert "Erlang" in p.reason or "erlang-c" in p.reason


def test_peak_needs_at_least_the_mean() -> None:
    t = TrafficProfile(mean_rps=10, peak_rps=40, input_len_mean=1000, output_len_mean=200)
    p = size_replicas(D8, t, SloTargets(ttft_ms=800, tpot_ms=40))
    assert p.replicas_peak > p.replicas_mean >= 1


def test_percentile_sizing_beats_averages() -> None:
    # Averages would say rate x E2E / slots; the tail needs at least that.
    p = size_replicas(D8, _traffic(50.0), SloTargets(ttft_ms=300, tpot_ms=30))
    avg = 50.0 * p.e2e_mean_ms / 1e3 / p.concurrency_per_replica
    assert p.replicas_peak >= avg


def test_impossible_slo_says_why() -> None:
    with pytest.raises(CapacityError, match="cannot meet the SLO"):
        size_replicas(D70, _traffic(1.0), SloTargets(ttft_ms=10, tpot_ms=1))


@settings(max_examples=30, deadline=None)
@given(
    rps=st.floats(0.1, 400.0),
    tpot=st.floats(8.0, 200.0),
    ttft=st.floats(50.0, 5000.0),
    looser=st.floats(1.0, 4.0),
    pct=st.sampled_from([90.0, 99.0, 99.9]),
)
def test_looser_slo_never_needs_more_replicas(
    rps: float, tpot: float, ttft: float, looser: float, pct: float
) -> None:
    t = _traffic(rps)
    try:
        tight = size_replicas(D8, t, SloTargets(ttft_ms=ttft, tpot_ms=tpot, percentile=pct))
    except CapacityError:
        return
    loose = size_replicas(
        D8, t, SloTargets(ttft_ms=ttft * looser, tpot_ms=tpot * looser, percentile=pct)
    )
    assert loose.replicas_peak <= tight.replicas_peak


@settings(max_examples=30, deadline=None)
@given(
    rps=st.floats(0.1, 400.0),
    more=st.floats(0.0, 400.0),
    cv=st.floats(0.5, 3.0),
    deployment=st.sampled_from([D8, D70]),
    queue=st.sampled_from(["erlang-c", "md-c"]),
)
def test_more_traffic_never_fewer_replicas(
    rps: float, more: float, cv: float, deployment: Deployment, queue: str
) -> None:
    slo = SloTargets(ttft_ms=2000, tpot_ms=60)
    try:
        base = size_replicas(deployment, _traffic(rps, cv), slo, queue_model=queue)
    except CapacityError:
        return
    bigger = size_replicas(deployment, _traffic(rps + more, cv), slo, queue_model=queue)
    assert bigger.replicas_peak >= base.replicas_peak


def test_traffic_validation_names_field() -> None:
    with pytest.raises(ValueError, match="peak_rps"):
        TrafficProfile(mean_rps=10, peak_rps=5, input_len_mean=10, output_len_mean=10)
    with pytest.raises(ValueError, match="extra"):
        TrafficProfile(mean_rps=1, input_len_mean=10, output_len_mean=10, qps=3)  # type: ignore[call-arg]
