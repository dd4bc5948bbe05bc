"""The TTFT guard as tick sequences: long prompts that queue inside replicas lower the
per-replica target; requests no fleet can serve in time do not; kept SLOs raise it back."""

from __future__ import annotations

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, decide
from shipit.policy.autoscaling.ttft_guard import GuardState, guard

SLOW = ((3.0, 0.5),)  # 3 s inside the replica for a prompt whose prefill alone is 0.5 s
HOPELESS = ((5.0, 3.0),)  # its prefill alone is over the 2 s SLO: no fleet helps


def cfg(**kw: float) -> AutoscalingConfig:
    base: dict[str, float] = {
        "min_replicas": 1,
        "max_replicas": 20,
        "target_concurrency": 8,
        "target_utilization": 1.0,
        "autoscaling_window_s": 60,
        "panic_window_s": 6,
        "cold_start_s": 30,
        "ttft_slo_s": 2.0,
    }
    return AutoscalingConfig.model_validate(base | kw)


def test_misses_inside_replicas_cut_the_target_once_per_cold_start() -> None:
    """One slow first token a tick from t=0: the first cut waits a cold start plus a panic
    window (36 s) of evidence, 37 of 37 slow: x0.7."""
    config, state = cfg(), GuardState()
    cuts = []
    for t in range(37):
        state, why = guard(config, SLOW, float(t), state, 1 / 8)
        cuts.append(why)
    assert cuts[:36] == [""] * 36
    assert state.factor == 0.7 and "37/37" in cuts[36]
    # Requests whose prefill alone misses the SLO are not the target's fault: no second cut.
    for t in range(37, 137):
        state, why = guard(config, HOPELESS, float(t), state, 1 / 8)
        assert why == ""
    assert state.factor == 0.7


def test_kept_slo_raises_the_target_back_after_a_window_and_200_first_tokens() -> None:
    """After a cut at t=0, 4 fast first tokens a tick from t=1: 200 of them by t=50, but the raise
    waits a stable window (t=60: 240 seen): 0.7 x 1.2 = 0.84."""
    config = cfg()
    state = GuardState(0.7, 0, 0, 0.0)
    fast = ((1.0, 0.5),) * 4
    whys = {}
    for t in range(1, 62):
        state, whys[t] = guard(config, fast, float(t), state, 1 / 8)
    assert whys[59] == "" and "240/240" in whys[60]
    assert abs(state.factor - 0.84) < 1e-9


def test_the_factor_never_goes_under_one_request_per_replica() -> None:
    config, state = cfg(), GuardState(0.13, 0, 0, 0.0)
    state, why = guard(config, SLOW * 3, 40.0, state, 1 / 8)
    assert state.factor == 1 / 8 and "x0.12" in why
    state, why = guard(config, SLOW * 3, 80.0, state, 1 / 8)
    assert state.factor == 1 / 8 and why == ""


def _run(config: AutoscalingConfig) -> list[tuple[int, str]]:
    """4/s of 2 s each keep 8 in service: one replica at target 8; every first token is
    slow inside the replica."""
    replica = ReplicaRecord("a", "http://a", state=ReplicaState.READY, in_flight=8)
    state, out = AutoscalingState(), []
    for t in range(60):
        snap = AutoscalingSnapshot(
            float(t), (replica,), 0, 4 * t, 4 * t, 8.0 * t, first_tokens=SLOW * 4
        )
        d, state = decide(config, snap, state)
        out.append((d.target, d.reason))
    return out


def test_the_policy_adds_a_replica_when_the_guard_cuts() -> None:
    """Demand 8 over target 8 is one replica until the cut at t=36; then 8 / 5.6 -> 2."""
    ticks = _run(cfg())
    assert {target for target, _ in ticks[1:36]} == {1}
    assert ticks[36][0] == 2 and "TTFT over 2s" in ticks[36][1]


def test_without_a_ttft_slo_the_guard_is_off() -> None:
    assert {target for target, _ in _run(cfg(ttft_slo_s=None))[1:]} == {1}
