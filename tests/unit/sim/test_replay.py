"""Replaying a decision log through the simulator's drivers: a faithful log replays to the
same decisions; a changed decision, a broken state chain or a policy with no driver is reported."""

from __future__ import annotations

import dataclasses
from typing import Any

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import LogEntry, MemoryLog
from shipit.engine.sim_timing import ReplicaModel
from shipit.sim.fleet import FleetSim
from shipit.sim.policies import OurPolicy
from shipit.sim.replay import replay
from shipit.sim.results import ReplicaKill, SimRequest

MODEL = ReplicaModel(gpu="H100", model="llama-3.1-8b", cold_start_s=5.0)


def _recorded_run() -> tuple[DeploymentConfig, list[LogEntry]]:
    scaling = AutoscalingConfig(
        min_replicas=1, max_replicas=3, target_concurrency=2, target_utilization=1.0,
        autoscaling_window_s=4, panic_window_s=1, scale_down_delay_s=2, tick_interval_s=0.5,
        cold_start_s=MODEL.cold_start_s,
    )  # fmt: skip
    d = DeploymentConfig(name="d", replicas=1, autoscaling=scaling)
    trace = [SimRequest(0.05 * i, 800, 40, priority=i % 3) for i in range(120)]
    log = MemoryLog()
    FleetSim(OurPolicy(scaling), MODEL, d, tick_s=0.5, initial_replicas=1, log=log).run(
        trace, 30.0, kills=[ReplicaKill(2.0, "r0")]
    )
    return d, log.entries


def test_the_simulators_own_log_replays_to_identical_decisions() -> None:
    d, entries = _recorded_run()
    report = replay(entries, {"d": d})
    kinds = dict(report.by_policy)
    for policy in ("route", "admission", "outlier", "health", "lifecycle", "autoscaling"):
        assert kinds.get(policy, 0) > 10, policy
    assert report.mismatches == () and report.identical
    codes = {getattr(e.decision, "reason_code", "") for e in entries}
    # a kill, a burst, a quiet end, a queue, failures
    assert {"crashed", "panic", "scale_down", "ready", "queued", "next_waiter", "counted"} <= codes


def test_a_changed_decision_a_broken_state_chain_and_an_unknown_policy_are_reported() -> None:
    d, entries = _recorded_run()
    control = [e for e in entries if e.policy in ("lifecycle", "autoscaling")]
    i = next(i for i, e in enumerate(control) if e.policy == "autoscaling" and i > 3)
    e = control[i]
    decision: Any = e.decision
    forged = dataclasses.replace(decision, target=decision.target + 5)
    control[i] = dataclasses.replace(e, decision=forged)
    j = max(k for k, e in enumerate(control) if e.policy == "lifecycle")
    e = control[j]
    state: Any = e.state
    control[j] = dataclasses.replace(e, state=dataclasses.replace(state, crashes=99))
    control.append(LogEntry("teleport", "d", None, None, None))
    report = replay(control, {"d": d})
    found = {(m.index, m.what) for m in report.mismatches}
    assert (i, "decision") in found and (j, "state") in found
    assert report.unknown == (("teleport", 1),) and not report.identical
