"""Replica faults: what to do on a spot pre-emption notice and on a detected GPU failure.

``decide(config, snapshot, state) -> (FaultDecision, state)``. The snapshot carries the
notices received and the GPU failures detected since the last call, with the nodes the
replicas run on. The steps, each with its reason code:

- **spot notice** (``spot_notice``): ``DRAIN`` the replica at once (no new requests; those in
  flight finish if they can before the deadline), ``REPLACE`` it at once (the replacement's
  obtain delay runs during the notice instead of after the pre-emption; with
  ``replace_on_notice`` false it waits for the pre-emption), and ``STOP`` it at the deadline
  (``preempted``), when the provider takes the machine whatever is left on it.
- **GPU failure** (``gpu_failed``), once detected: ``CORDON`` its node through the node health
  policy (a hardware error cordons at once; past ``max_cordoned_fraction`` the node is
  ``held`` schedulable and the step says so), ``STOP`` the replica (a dead GPU in a
  tensor-parallel group stops the whole replica: there is nothing to drain, what it had in
  flight is lost and retried by the client) and ``REPLACE`` it on another node.

Which pool the replacement comes from is ``policy.pool_choice``'s (a pre-emption makes spot
short there); how long detection takes is the caller's (a health probe's threshold). Pure: no
clock, no IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shipit.policy import node_health
from shipit.policy.node_health import NodeFailure, NodeHealthConfig, NodeHealthSnapshot


class FaultAction(enum.Enum):
    DRAIN = "drain"  # take no new requests
    STOP = "stop"  # release the machine
    REPLACE = "replace"  # start another replica in the same plane
    CORDON = "cordon"  # mark the node unschedulable


@dataclass(frozen=True, slots=True)
class FaultConfig:
    replace_on_notice: bool = True
    node_health: NodeHealthConfig = field(default_factory=NodeHealthConfig)


# A live fleet plane on one machine: each replica is its own pseudo-node (``node-<replica>``),
# never reused, so a cordon takes no capacity away and the cap on the cordoned share is lifted.
LIVE_PLANE = FaultConfig(node_health=NodeHealthConfig(max_cordoned_fraction=1.0))


@dataclass(frozen=True, slots=True)
class SpotNotice:
    replica_id: str
    node: str
    deadline_s: float  # when the provider takes the machine


@dataclass(frozen=True, slots=True)
class GpuFailure:
    replica_id: str
    node: str
    failed_at_s: float
    detail: str = "Xid 79: GPU has fallen off the bus"


@dataclass(frozen=True, slots=True)
class FaultSnapshot:
    now_s: float
    nodes: tuple[str, ...]  # every node replicas may land on
    cordoned: frozenset[str] = frozenset()
    notices: tuple[SpotNotice, ...] = ()
    failures: tuple[GpuFailure, ...] = ()  # detected since the last call


@dataclass(frozen=True, slots=True)
class FaultStep:
    target: str  # a replica id, or a node for CORDON
    action: FaultAction
    at_s: float
    reason_code: str  # spot_notice, preempted, gpu_failed, hardware_error, cordon_cap_reached
    reason: str


@dataclass(frozen=True, slots=True)
class FaultDecision:
    steps: tuple[FaultStep, ...]
    reason_code: str  # faults, steady
    reason: str

    def targets(self, action: FaultAction) -> tuple[str, ...]:
        return tuple(s.target for s in self.steps if s.action is action)


def decide(
    config: FaultConfig, snapshot: FaultSnapshot, state: node_health.NodeHealthState
) -> tuple[FaultDecision, node_health.NodeHealthState]:
    now = snapshot.now_s
    steps: list[FaultStep] = []
    for n in snapshot.notices:
        left = max(n.deadline_s - now, 0.0)
        steps.append(
            FaultStep(
                n.replica_id,
                FaultAction.DRAIN,
                now,
                "spot_notice",
                f"{n.replica_id}: spot pre-emption in {left:.0f}s; draining",
            )
        )
        steps.append(
            FaultStep(
                n.replica_id,
                FaultAction.REPLACE,
                now if config.replace_on_notice else n.deadline_s,
                "spot_notice",
                f"{n.replica_id}: replacing it "
                + ("now, during the notice" if config.replace_on_notice else "at the deadline"),
            )
        )
        steps.append(
            FaultStep(
                n.replica_id,
                FaultAction.STOP,
                n.deadline_s,
                "preempted",
                f"{n.replica_id}: the provider takes it at the end of the notice",
            )
        )
    health, new_state = node_health.decide(
        config.node_health,
        NodeHealthSnapshot(
            now_s=now,
            nodes=snapshot.nodes,
            cordoned=snapshot.cordoned,
            failures=tuple(
                NodeFailure(f.node, f.replica_id, f.failed_at_s, "GpuFailure", hardware=True)
                for f in snapshot.failures
            ),
        ),
        state,
    )
    for c in health.cordon:
        steps.append(FaultStep(c.node, FaultAction.CORDON, now, c.reason_code, c.reason))
    for f in snapshot.failures:
        if f.node in health.held:
            steps.append(
                FaultStep(
                    f.node,
                    FaultAction.CORDON,
                    now,
                    "cordon_cap_reached",
                    f"node {f.node} not cordoned: {health.reason}",
                )
            )
        why = (
            f"{f.replica_id}: GPU failed at {f.failed_at_s:.0f}s ({f.detail}), detected "
            f"{now - f.failed_at_s:.0f}s later; stopping it (nothing to drain) and replacing it"
        )
        steps.append(FaultStep(f.replica_id, FaultAction.STOP, now, "gpu_failed", why))
        steps.append(FaultStep(f.replica_id, FaultAction.REPLACE, now, "gpu_failed", why))
    if not steps:
        return FaultDecision((), "steady", "no notice and no failure"), new_state
    n_notice, n_fail = len(snapshot.notices), len(snapshot.failures)
    why = f"{n_notice} spot notice(s), {n_fail} GPU failure(s) detected"
    return FaultDecision(tuple(steps), "faults", why), new_state
