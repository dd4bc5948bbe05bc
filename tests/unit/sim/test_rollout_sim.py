"""Rollouts in simulated time: the live rollout policy judging simulated traffic."""

from __future__ import annotations

import pytest

from shipit.config.rollout import AnalysisConfig, RolloutSpec, VersionConfig
from shipit.policy.rollout import Phase
from shipit.sim.rollout import VersionModel, run_trial, version_model


def spec() -> RolloutSpec:
    return RolloutSpec(
        deployment="sim",
        baseline="v1",
        candidate=VersionConfig(name="v2"),
        steps_percent=[5.0, 50.0],
        bake_s=30.0,
        keep_old_s=0.0,
        analysis=AnalysisConfig(interval_s=10.0),
    )


BASE = VersionModel(ttft_median_s=0.05, tpot_median_s=0.01)


def test_equal_candidate_is_promoted_and_serves_its_shares() -> None:
    trial = run_trial(spec(), BASE, BASE, rate_per_s=40, seed=3, keep_decisions=True)
    assert trial.phase is Phase.COMPLETE
    codes = [d.reason_code for d in trial.decisions]
    assert codes[0] == "warming" and codes.count("step") == 2 and codes[-1] == "complete"
    # About 5 % then 50 % of 30 s at 40 req/s each (Poisson): 60 + 600.
    assert 450 < trial.exposed < 900


@pytest.mark.parametrize(
    ("candidate", "metric"),
    [
        (BASE.scaled(tpot=1.3), "tpot worse"),
        (BASE.scaled(ttft=1.5), "ttft worse"),
        (BASE.scaled(error_share=0.2), "errors worse"),
    ],
)
def test_degraded_candidate_is_rolled_back_with_the_reason(
    candidate: VersionModel, metric: str
) -> None:
    trial = run_trial(spec(), BASE, candidate, rate_per_s=40, seed=4)
    assert trial.phase is Phase.ROLLED_BACK
    assert metric in trial.reason
    assert trial.exposed < 400  # caught at the 5 % step


def test_roofline_medians_rank_accelerators() -> None:
    h100 = version_model("H100", "llama-3.1-8b")
    a100 = version_model("A100", "llama-3.1-8b")
    assert a100.tpot_median_s > h100.tpot_median_s > 0
    assert a100.ttft_median_s > h100.ttft_median_s > 0
