"""The health policy: probe outcomes through thresholds, as tables of probe sequences."""

from __future__ import annotations

import pytest

from shipit.config.gateway import ConfigError, HealthCheckConfig, parse_config
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.health import (
    HealthDecision,
    HealthSnapshot,
    HealthState,
    ProbeOutcome,
    ProbeStreak,
    decide,
    forget,
    probe_wanted,
    resync_wanted,
)

OK = ProbeOutcome(True, 200)
DOWN = ProbeOutcome(False, None, "connection refused")
S, R, U, D = (
    ReplicaState.STARTING,
    ReplicaState.READY,
    ReplicaState.UNHEALTHY,
    ReplicaState.DRAINING,
)


def run(
    start: ReplicaState, probes: str, config: HealthCheckConfig | None = None
) -> list[tuple[ReplicaState, str]]:
    """Drive one replica through probes ("+" ok, "-" failed), applying each target state;
    the state and reason code after each probe."""
    config = config or HealthCheckConfig()
    record = ReplicaRecord("a", "http://a", state=start)
    state = HealthState()
    out = []
    for i, p in enumerate(probes):
        snapshot = HealthSnapshot(float(i), record, OK if p == "+" else DOWN)
        decision, state = decide(config, snapshot, state)
        if decision.target is not None:
            record = record.evolve(state=decision.target, state_since_s=float(i))
        out.append((record.state, decision.reason_code))
    return out


@pytest.mark.parametrize(
    ("start", "probes", "config", "states"),
    [
        # Defaults: unhealthy after 3 failed probes in a row, ready again at the first ok.
        (R, "---", {}, [R, R, U]),
        (R, "--+--", {}, [R, R, R, R, R]),  # an ok probe ends the failure streak
        (R, "---+", {}, [R, R, U, R]),
        (S, "+", {}, [R]),  # a starting replica is ready at its first ok probe
        (S, "-----", {}, [S, S, S, S, S]),  # still loading: the lifecycle policy decides
        (S, "-+", {"healthy_threshold": 3}, [S, R]),  # even with a higher healthy threshold
        (R, "-", {"unhealthy_threshold": 1}, [U]),
        (R, "---+-+", {"healthy_threshold": 2}, [R, R, U, U, U, U]),
        (R, "---++", {"healthy_threshold": 2}, [R, R, U, U, R]),
        (D, "++--++", {}, [D] * 6),  # a cordoned replica is never changed by probes
        (ReplicaState.STOPPED, "+-", {}, [ReplicaState.STOPPED] * 2),
    ],
)
def test_thresholds(
    start: ReplicaState, probes: str, config: dict[str, int], states: list[ReplicaState]
) -> None:
    got = run(start, probes, HealthCheckConfig(**config))
    assert [s for s, _ in got] == states


def test_reason_codes_follow_the_streak() -> None:
    codes = [code for _, code in run(R, "--+---++", HealthCheckConfig(healthy_threshold=2))]
    assert codes == [
        "probe_failed",
        "probe_failed",
        "healthy",
        "probe_failed",
        "probe_failed",
        "unhealthy",
        "recovering",
        "recovered",
    ]
    assert [c for _, c in run(S, "-+")] == ["starting", "ready"]
    assert [c for _, c in run(D, "+")] == ["cordoned"]


def test_the_decision_names_the_count_and_the_last_error() -> None:
    config = HealthCheckConfig()
    record = ReplicaRecord("a", "http://a", state=R)
    state = HealthState((ProbeStreak("a", failures=2),))
    decision, state = decide(config, HealthSnapshot(5.0, record, DOWN), state)
    assert decision == HealthDecision(
        "a",
        U,
        "unhealthy",
        "a unhealthy: 3 failed probes in a row (unhealthy_threshold 3), last: connection refused",
    )
    assert state.streak("a") == ProbeStreak("a", failures=3)


def test_a_cordoned_replica_keeps_its_streak() -> None:
    state = HealthState((ProbeStreak("a", failures=2),))
    record = ReplicaRecord("a", "http://a", state=D)
    _, after = decide(HealthCheckConfig(), HealthSnapshot(0.0, record, DOWN), state)
    assert after == state


def test_streaks_are_per_replica_and_forgotten_with_the_replica() -> None:
    config = HealthCheckConfig(unhealthy_threshold=2)
    a, b = (ReplicaRecord(rid, f"http://{rid}", state=R) for rid in "ab")
    state = HealthState()
    _, state = decide(config, HealthSnapshot(0.0, a, DOWN), state)
    decision, state = decide(config, HealthSnapshot(0.0, b, DOWN), state)
    assert decision.target is None, "b's first failure is not a's second"
    assert forget(state, ["b"]).streaks == (ProbeStreak("b", failures=1),)


def test_which_replicas_are_probed_and_when_adapters_are_read_again() -> None:
    ready = ReplicaRecord("a", "http://a", state=R)
    assert probe_wanted(ready) and probe_wanted(ready.evolve(state=U))
    assert not probe_wanted(ready.evolve(state=D))
    assert not probe_wanted(ready.evolve(state=ReplicaState.STOPPED))
    fresh, blipped = HealthState(), HealthState((ProbeStreak("a", failures=1),))
    assert not resync_wanted(ready, OK, fresh)
    assert resync_wanted(ready, OK, blipped), "it may have restarted between two probes"
    assert resync_wanted(ready.evolve(state=S), OK, fresh)
    assert not resync_wanted(ready.evolve(state=S), DOWN, fresh)


def test_the_thresholds_are_validated_in_shipit_yaml() -> None:
    d = parse_config({"deployments": [{"health": {"unhealthy_threshold": 5}}]}).deployments[0]
    assert (d.health.unhealthy_threshold, d.health.healthy_threshold) == (5, 1)
    with pytest.raises(ConfigError) as info:
        parse_config({"deployments": [{"health": {"unhealthy_threshold": 0}}]})
    assert info.value.field == "deployments.0.health.unhealthy_threshold"
    with pytest.raises(ConfigError) as info:
        parse_config({"deployments": [{"health": {"threshold": 2}}]})
    assert info.value.field == "deployments.0.health.threshold"
