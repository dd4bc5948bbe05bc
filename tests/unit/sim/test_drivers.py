"""``sim.drivers``: each call into the live policy code, with the router's and monitor's rules
around it (failover exclusion, the cold-start hold, retries, the probe rule), and the record it
leaves in the decision log."""

from __future__ import annotations

import pytest

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import (
    DeploymentConfig,
    HealthCheckConfig,
    QueueingConfig,
    RetryConfig,
)
from shipit.core.decisions import LogEntry, MemoryLog
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy.admission import AdmissionDecision, ExclusionSnapshot
from shipit.policy.autoscaling import AutoscalingState
from shipit.policy.autoscaling.settings import lifecycle_config
from shipit.policy.health import HealthSnapshot, HealthState, ProbeOutcome
from shipit.policy.lifecycle import LifecycleSnapshot, LifecycleState
from shipit.policy.reliability import RetryBudgetState, RetryDecision
from shipit.policy.routing import RouteSnapshot, RoutingState
from shipit.sim import drivers

DEP = DeploymentConfig(name="d", replicas=0)
Q = QueueingConfig(cold_start_hold_s=100.0, queue_timeout_s=20.0)


def rec(rid: str, *, in_flight: int = 0, state: ReplicaState = ReplicaState.READY) -> ReplicaRecord:
    return ReplicaRecord(rid, f"sim://{rid}", state=state, in_flight=in_flight)


def req(rid: str = "q", *, deadline_s: float | None = None) -> RequestView:
    return RequestView(request_id=rid, deployment="d", model="m", deadline_s=deadline_s)


def test_a_retry_avoids_replicas_that_failed_it_unless_none_is_left() -> None:
    log = MemoryLog()
    policy = drivers.routing_policy(DEP)
    replicas = [rec("a"), rec("b", in_flight=5)]

    def route(fleet: list[ReplicaRecord], exclude: frozenset[str]) -> str | None:
        avoid = drivers.exclusion(fleet, exclude, now_s=1.0, deployment="d", log=log)
        d = drivers.place(policy, req(), fleet, avoid=avoid, now_s=1.0, deployment="d", log=log)
        return d.replica_id

    assert route(replicas, frozenset()) == "a"
    assert route(replicas, frozenset({"a"})) == "b"
    assert route(replicas[:1], frozenset({"a"})) == "a"
    # logged as the router logs it: the retry's exclusion (admission), then the route
    excluded, routed = log.entries[2], log.entries[3]
    assert (excluded.policy, routed.policy, routed.deployment) == ("admission", "route", "d")
    assert isinstance(excluded.snapshot, ExclusionSnapshot)
    assert excluded.snapshot.exclude == {"a"}
    assert isinstance(routed.snapshot, RouteSnapshot) and routed.state == RoutingState(
        turn=1, last_id="a"
    )
    assert getattr(routed.decision, "replica_id", None) == "b"
    assert [r.replica_id for r in routed.snapshot.replicas] == ["b"]


@pytest.mark.parametrize(
    ("routable", "deadline_s", "expected"),
    [
        (0, None, (100.0, True, 503, "cold_start")),
        # Still nothing routable when the wait ends: the hold ran out (as live).
        (1, None, (20.0, False, 503, "cold_start")),
        (0, 15.0, (5.0, True, 504, "queue_timeout")),  # the deadline bounds it, not the hold
        (1, 200.0, (20.0, False, 503, "cold_start")),
    ],
)
def test_the_wait_and_what_a_waiter_gets_when_it_runs_out(
    routable: int, deadline_s: float | None, expected: tuple[float, bool, int, str]
) -> None:
    queue = drivers.admission_queue(Q)
    admitted = drivers.admit(
        queue, req(deadline_s=deadline_s), exclude=frozenset(), routable=routable,
        now_s=10.0, deployment="d",
    )  # fmt: skip
    gone = drivers.give_up(queue, "q", routable=0, starting=1, now_s=10.0, deployment="d")
    assert (admitted.wait_s, admitted.cold_hold, gone.status, gone.reason_code) == expected
    assert len(queue) == 0


def test_admission_dispatch_and_expiry_are_logged() -> None:
    log = MemoryLog()
    queue = drivers.admission_queue(QueueingConfig(max_queue=1))

    def admit(rid: str, now: float, deadline_s: float | None = None) -> AdmissionDecision:
        return drivers.admit(
            queue, req(rid, deadline_s=deadline_s), exclude=frozenset(), routable=1,
            now_s=now, deployment="d", log=log,
        )  # fmt: skip

    first, full = admit("a", 0.0, 5.0), admit("b", 1.0)
    assert first.admitted and (full.admitted, full.status) == (False, 429)
    assert admit("c", 2.0, deadline_s=1.0).status == 504
    busy = [rec("r", in_flight=8)]
    d = drivers.next_waiter(queue, busy, tried=frozenset(), now_s=6.0, deployment="d", log=log)
    assert [e.request_id for e in d.expired] == ["a"] and d.entry is None and len(queue) == 0
    assert [e.policy for e in log.entries] == ["admission"] * 4


def test_retries_stop_at_max_attempts_and_an_empty_budget() -> None:
    retries = RetryConfig(max_attempts=3, budget_ratio=0.0, budget_min_per_s=0.0)
    budget = drivers.retry_budget(retries)
    budget.state = RetryBudgetState(balance=1.0)

    def retry(attempt: int) -> RetryDecision:
        return drivers.may_retry(
            budget, retries, request_id="q", attempt=attempt, now_s=0.0, deployment="d"
        )

    assert retry(3).reason_code == "max_attempts"
    assert retry(1).allowed
    assert (retry(1).allowed, retry(1).reason_code) == (False, "budget_exhausted")


def test_health_and_lifecycle_go_through_the_live_policies_and_are_logged() -> None:
    log = MemoryLog()
    cfg = HealthCheckConfig(unhealthy_threshold=2)
    state = HealthState()
    ready = rec("a")
    for n, expected in ((1, None), (2, ReplicaState.UNHEALTHY)):
        snap = HealthSnapshot(float(n), ready, ProbeOutcome(False, None, "refused"))
        decision, state = drivers.health_check(cfg, snap, state, deployment="d", log=log)
        assert decision.target is expected, n  # the threshold, not one failed probe
    life_cfg = lifecycle_config(DeploymentConfig(startup_timeout_s=30, drain_timeout_s=9))
    assert (life_cfg.startup_timeout_s, life_cfg.drain_timeout_s) == (30, 9)
    snap_l = LifecycleSnapshot(5.0, (ready,), dead=frozenset({"a"}))
    life, _ = drivers.lifecycle_step(life_cfg, snap_l, LifecycleState(), deployment="d", log=log)
    assert [s.reason_code for s in life.steps] == ["crashed"] and life.starts_held(5.5)
    assert [e.policy for e in log.entries] == ["health", "health", "lifecycle"]


def test_autoscaling_sees_the_records_and_logs_state_in() -> None:
    records = [
        rec("a", in_flight=3),
        rec("b", state=ReplicaState.UNHEALTHY),
        rec("c", state=ReplicaState.DRAINING),
    ]
    snapshot = drivers.autoscaling_snapshot(5.0, records, queued=2)
    assert snapshot.replicas == tuple(records) and snapshot.queued == 2
    log = MemoryLog()
    state = AutoscalingState()
    decision, new_state = drivers.autoscale(
        AutoscalingConfig(), snapshot, state, deployment="d", log=log
    )
    assert log.entries == [LogEntry("autoscaling", "d", snapshot, state, decision)]
    assert new_state != state
