"""A request's path through the simulated gateway, as the live router and proxy take it:
priorities, shedding, a full queue, deadlines, a replica that dies (retry before the first
byte, an error after it, refused connections until the death is noticed, outlier ejection,
a replacement), and every decision in the log as frozen, serialisable data."""

from __future__ import annotations

import dataclasses
import enum

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig, QueueingConfig, RetryConfig
from shipit.core.decisions import MemoryLog
from shipit.core.fleet import ReplicaState
from shipit.engine.sim_timing import ReplicaModel
from shipit.policy.admission import AdmissionDecision, OfferSnapshot
from shipit.policy.health import HealthDecision
from shipit.policy.reliability import Ejection
from shipit.sim.fleet import FleetSim
from shipit.sim.policies import FixedFleet, OurPolicy
from shipit.sim.results import ReplicaKill, SimResult
from shipit.sim.results import SimRequest as R

MODEL = ReplicaModel(cold_start_s=10.0)


def deployment(**queueing: float) -> DeploymentConfig:
    return DeploymentConfig(name="sim", replicas=0, queueing=QueueingConfig(**queueing))


def by_id(result: SimResult) -> dict[str, tuple[int, str]]:
    return {r.request_id: (r.status, r.reason_code) for r in result.requests}


def first_token_at(result: SimResult) -> dict[str, float]:
    return {r.request_id: r.arrival_s + r.ttft_s for r in result.requests if r.ttft_s is not None}


def test_waiting_requests_are_served_by_priority_then_arrival() -> None:
    trace = [R(0.0, 64, 100), R(0.1, 64, 4, priority=5), R(0.2, 64, 4), R(0.3, 64, 4, priority=1)]
    log = MemoryLog()
    sim = FleetSim(FixedFleet(1), MODEL, deployment(max_concurrency=1), initial_replicas=1, log=log)
    result = sim.run(trace, 10.0)
    assert set(by_id(result).values()) == {(200, "ok")}
    t = first_token_at(result)
    assert t["q0"] < t["q2"] < t["q3"] < t["q1"]
    offers = [
        e.decision.reason_code
        for e in log.entries
        if isinstance(e.snapshot, OfferSnapshot) and isinstance(e.decision, AdmissionDecision)
    ]
    assert offers == ["queued"] * 3


def test_a_full_queue_sheds_the_lower_priority_and_refuses_the_rest() -> None:
    trace = [R(0.0, 64, 100), R(0.1, 64, 4, priority=5), R(0.2, 64, 4), R(0.3, 64, 4)]
    sim = FleetSim(
        FixedFleet(1), MODEL, deployment(max_concurrency=1, max_queue=1), initial_replicas=1
    )
    assert by_id(sim.run(trace, 10.0)) == {
        "q0": (200, "ok"),
        "q1": (429, "shed"),
        "q2": (200, "ok"),
        "q3": (429, "queue_full"),
    }


def test_a_deadline_that_passes_while_queued_gets_504() -> None:
    trace = [R(0.0, 64, 200), R(0.1, 64, 4, deadline_s=0.4), R(0.2, 64, 4, deadline_s=0.1)]
    sim = FleetSim(FixedFleet(1), MODEL, deployment(max_concurrency=1), initial_replicas=1)
    result = by_id(sim.run(trace, 10.0))
    assert result["q0"] == (200, "ok")
    assert result["q1"][0] == 504
    assert result["q2"] == (504, "deadline_passed")  # already past on arrival


def test_a_dead_replica_fails_its_requests_over_before_the_first_byte_only() -> None:
    """r0 dies at 0.3 s. Its stream has sent tokens: an error (no retry mid-stream). Its
    non-streamed request has sent nothing: retried on r1. A request routed to r0 before the
    death is noticed is refused and retried; that third failure in a row ejects r0."""
    trace = [
        R(0.0, 3_000, 50),  # q0 -> r0
        R(0.0, 3_000, 50),  # q1 -> r1
        R(0.0, 3_000, 50, stream=False),  # q2 -> r0
        R(0.0, 3_000, 50),  # q3 -> r1
        R(0.5, 100, 10),  # q4 -> r0 (dead, not yet noticed) -> r1
    ]
    log = MemoryLog()
    sim = FleetSim(FixedFleet(2), MODEL, initial_replicas=2, log=log)
    result = sim.run(trace, 5.0, kills=[ReplicaKill(0.3, "r0")])
    assert by_id(result) == {
        "q0": (502, "mid_stream"),
        "q1": (200, "ok"),
        "q2": (200, "ok"),
        "q3": (200, "ok"),
        "q4": (200, "ok"),
    }
    served = {r.request_id: (r.attempts, r.replica_id) for r in result.served}
    assert served["q2"] == (2, "r1") and served["q4"] == (2, "r1")
    ejections = [
        (e.snapshot, getattr(e.decision, "ejection", None))
        for e in log.entries
        if e.policy == "outlier" and getattr(e.decision, "ejection", None) is not None
    ]
    assert len(ejections) == 1
    snapshot, ejection = ejections[0]
    assert isinstance(ejection, Ejection) and ejection.replica_id == "r0"
    assert getattr(snapshot, "now_s", None) == 0.5 and "cannot connect" in ejection.reason


def test_without_retries_a_dead_replicas_requests_fail() -> None:
    trace = [R(0.0, 3_000, 50, stream=False), R(0.0, 3_000, 50, stream=False)]
    d = DeploymentConfig(name="sim", replicas=0, retries=RetryConfig(max_attempts=1))
    result = FleetSim(FixedFleet(2), MODEL, d, initial_replicas=2).run(
        trace, 5.0, kills=[ReplicaKill(0.05, "r0")]
    )
    assert by_id(result) == {"q0": (502, "replica_failed"), "q1": (200, "ok")}


def test_a_crashed_replica_is_replaced_after_the_back_off() -> None:
    config = AutoscalingConfig(min_replicas=2, max_replicas=2)
    trace = [R(float(t), 64, 8) for t in range(30)]
    log = MemoryLog()
    sim = FleetSim(OurPolicy(config), MODEL, initial_replicas=2, log=log)
    result = sim.run(trace, 40.0, kills=[ReplicaKill(2.5, "r0")])
    assert result.dropped == 0
    assert result.scale_events == 3  # r0, r1, then r2 for the crashed r0
    assert sim.replicas["r0"].stopped_s == 3.0  # reaped at the next tick
    assert sim.replicas["r2"].started_s == 4.0  # after the 1 s back-off
    health = [e.decision for e in log.entries if e.policy == "health"]
    ready = [d.replica_id for d in health if isinstance(d, HealthDecision) and d.target]
    assert "r2" in ready and sim.records["r2"].state is ReplicaState.READY  # through a probe


_SCALARS = (int, float, str, bool, type(None), enum.Enum)


def _frozen_data(value: object) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_frozen_data(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(getattr(params, "frozen", False)) and all(
            _frozen_data(getattr(value, f.name)) for f in dataclasses.fields(value)
        )
    return False


def test_every_logged_decision_is_frozen_data() -> None:
    trace = [R(0.0, 3_000, 50), R(0.0, 64, 8, priority=2), R(0.1, 64, 8, deadline_s=0.2)]
    trace += [R(0.2 + i * 0.01, 64, 8) for i in range(10)]
    trace += [R(4.0, 3_000, 200), R(4.0, 64, 8)]
    log = MemoryLog()
    sim = FleetSim(
        OurPolicy(AutoscalingConfig(min_replicas=1, max_replicas=2)),
        MODEL,
        deployment(max_concurrency=1, max_queue=4),
        initial_replicas=1,
        log=log,
    )
    result = sim.run(trace, 30.0, kills=[ReplicaKill(4.5, "r0")])
    assert {s for s, _ in result.statuses()} == {200, 429, 502, 504}
    kinds = {e.policy for e in log.entries}
    assert {"route", "admission", "retry_budget", "autoscaling", "health", "lifecycle"} <= kinds
    for e in log.entries:
        policy, deployment_name, snapshot, state, decision = (
            e.policy,
            e.deployment,
            e.snapshot,
            e.state,
            e.decision,
        )
        assert deployment_name == "sim"
        assert _frozen_data(snapshot) and _frozen_data(state) and _frozen_data(decision), policy


def test_a_plain_answer_waits_unary_timeout_not_first_byte_timeout_as_live() -> None:
    """A plain answer's first byte is its last: 500 tokens take longer than a 0.5 s
    ``first_byte_timeout_s``, which bounds streams only; ``unary_timeout_s`` bounds it."""
    trace = [R(0.0, 64, 500, stream=False)]

    def run(**retries: float) -> tuple[int, str]:
        dep = DeploymentConfig(
            name="sim", replicas=0, retries=RetryConfig(max_attempts=1, **retries)
        )
        sim = FleetSim(FixedFleet(1), MODEL, dep, initial_replicas=1)
        return by_id(sim.run(trace, 600.0))["q0"]

    assert run(first_byte_timeout_s=0.5) == (200, "ok")
    assert run(first_byte_timeout_s=60, unary_timeout_s=0.5)[0] == 504
