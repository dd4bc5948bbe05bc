"""The node health policy: which cluster nodes to cordon after hardware-looking failures.

``decide(config, snapshot, state) -> (NodeHealthDecision, state)``. The snapshot carries the
replica failures seen since the last call (which node, why, whether the message looks like a
GPU hardware error: an NVIDIA XID, ECC or "fallen off the bus" report), every node the backend
knows and the ones already unschedulable. The state keeps the failures still inside the window.

A node is cordoned when, inside ``window_s``, it has ``failures_to_cordon`` replica failures
(a replica crashing again and again on the same node), or ``hardware_failures_to_cordon``
failures whose message looks like hardware. Never more than ``max_cordoned_fraction`` of the
nodes are unschedulable at once (counting those cordoned by anyone): a node that qualifies
beyond the cap is reported as ``held`` and left schedulable, since a fleet with no nodes left
serves nobody. Once cordoned a node's failures are forgotten.

Pure: ``now_s`` is in the snapshot; the Kubernetes backend applies the cordons.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_HARDWARE = re.compile(
    r"\bxid\b|nvrm|fallen off the bus|uncorrectable ecc|double bit ecc|gpu lost|"
    r"cuda error: (an illegal memory access|unspecified launch failure)",
    re.IGNORECASE,
)


def hardware_looking(message: str) -> bool:
    """Whether a termination reason or message looks like a GPU hardware fault."""
    return bool(_HARDWARE.search(message))


@dataclass(frozen=True, slots=True)
class NodeHealthConfig:
    failures_to_cordon: int = 3  # replica failures on one node inside the window
    hardware_failures_to_cordon: int = 1  # of which XID-like: cordon at once by default
    window_s: float = 600.0
    max_cordoned_fraction: float = 0.25  # of all nodes, counting those already cordoned


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: str
    replica_id: str
    at_s: float
    reason_code: str  # OOMKilled, Error, Evicted, NodeLost ...
    hardware: bool = False


@dataclass(frozen=True, slots=True)
class NodeHealthSnapshot:
    now_s: float
    nodes: tuple[str, ...]  # every node the replicas may land on
    cordoned: frozenset[str] = frozenset()  # unschedulable now, by us or anyone
    failures: tuple[NodeFailure, ...] = ()  # new since the last call


@dataclass(frozen=True, slots=True)
class NodeHealthState:
    failures: tuple[NodeFailure, ...] = ()  # inside the window, on schedulable nodes


@dataclass(frozen=True, slots=True)
class NodeCordon:
    node: str
    reason_code: str  # repeated_failures, hardware_error
    reason: str


@dataclass(frozen=True, slots=True)
class NodeHealthDecision:
    cordon: tuple[NodeCordon, ...]
    held: tuple[str, ...]  # would be cordoned, but the cap on cordoned nodes is reached
    reason_code: str  # cordon, cordon_cap_reached, healthy
    reason: str


def decide(
    config: NodeHealthConfig, snapshot: NodeHealthSnapshot, state: NodeHealthState
) -> tuple[NodeHealthDecision, NodeHealthState]:
    now = snapshot.now_s
    recent = tuple(
        f
        for f in state.failures + snapshot.failures
        if now - f.at_s <= config.window_s and f.node not in snapshot.cordoned
    )
    cap = math.floor(config.max_cordoned_fraction * len(snapshot.nodes))
    room = max(cap - len(snapshot.cordoned), 0)
    cordon: list[NodeCordon] = []
    held: list[str] = []
    for node in sorted({f.node for f in recent}):
        on_node = [f for f in recent if f.node == node]
        hw = [f for f in on_node if f.hardware]
        if len(hw) >= config.hardware_failures_to_cordon:
            code = "hardware_error"
            why = (
                f"node {node}: {len(hw)} hardware-looking failure(s) in {config.window_s:g}s "
                f"(last: {hw[-1].replica_id} {hw[-1].reason_code}); cordoning it"
            )
        elif len(on_node) >= config.failures_to_cordon:
            code = "repeated_failures"
            codes = ", ".join(f.reason_code for f in on_node)
            why = (
                f"node {node}: {len(on_node)} replica failures in {config.window_s:g}s "
                f"({codes}); cordoning it"
            )
        else:
            continue
        if len(cordon) < room:
            cordon.append(NodeCordon(node, code, why))
        else:
            held.append(node)
    done = {c.node for c in cordon}
    keep = tuple(f for f in recent if f.node not in done)
    if cordon:
        code, why = "cordon", "; ".join(c.reason for c in cordon)
    elif held:
        code = "cordon_cap_reached"
        why = (
            f"node(s) {', '.join(held)} qualify for cordoning, but {len(snapshot.cordoned)} of "
            f"{len(snapshot.nodes)} are already unschedulable (max_cordoned_fraction "
            f"{config.max_cordoned_fraction:g}); leaving them schedulable"
        )
    else:
        code, why = "healthy", "no node over its failure threshold"
    return NodeHealthDecision(tuple(cordon), tuple(held), code, why), NodeHealthState(keep)
