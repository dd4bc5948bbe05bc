"""Replay helpers: the warm-up prefix and the scoring window."""

from __future__ import annotations

import pytest

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.errors import ShipitError
from shipit.sim.results import RequestResult, SimRequest, SimResult
from shipit.sim.trace_replay import make_policy, score, with_warmup

TRACE = [SimRequest(float(t), 10, 10) for t in (0, 1, 2, 3)]


def arrivals(reqs: list[SimRequest]) -> list[float]:
    return [q.arrival_s for q in reqs]


def test_warmup_replays_the_tail_first_and_repeats_a_short_trace() -> None:
    assert arrivals(with_warmup(TRACE, 0)) == [0, 1, 2, 3]
    assert arrivals(with_warmup(TRACE, 2)) == [0, 1, 2, 3, 4, 5]  # the tail 2, 3, then all
    assert arrivals(with_warmup(TRACE, 10)) == list(range(14))  # period 4: repeated


def test_score_counts_only_after_the_warmup() -> None:
    result = SimResult(
        "p",
        [
            RequestResult("q0", 1.0, 200, "ok", ttft_s=9.0),  # warm-up: ignored
            RequestResult("q1", 10.0, 200, "ok", ttft_s=0.5),
            RequestResult("q2", 11.0, 200, "ok", ttft_s=3.0),
            RequestResult("q3", 12.0, 503, "cold_start"),
        ],
    )
    s = score(
        result,
        [(0.0, 20.0), (5.0, 15.0), (12.0, 30.0)],
        infeasible=frozenset({"q2"}),
        start_s=10.0,
        end_s=20.0,
        slo_s=2.0,
        oracle_replica_seconds=10.0,
        oracle_peak=1,
    )
    assert (s.requests, s.dropped, s.infeasible) == (3, 1, 1)
    assert s.slo_attainment == pytest.approx(1 / 3)
    assert s.feasible_attainment == pytest.approx(1 / 2)
    assert s.replica_seconds == 10 + 5 + 8 and s.ratio == pytest.approx(2.3)
    assert s.peak_replicas == 3 and s.replica_starts == 1


def test_unknown_policies_and_bad_fixed_sizes_say_what_to_use() -> None:
    with pytest.raises(ShipitError, match="fixed:N takes a replica count"):
        make_policy("fixed:0", AutoscalingConfig())
    with pytest.raises(ShipitError, match="shipit, knative, keda, ray, skyserve"):
        make_policy("hpa", AutoscalingConfig())
