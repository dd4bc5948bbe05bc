"""Pure autoscaling policy: how many replicas, and which to stop."""

from shipit.policy.autoscaling.policy import (
    AutoscalingSnapshot,
    AutoscalingState,
    ReplicaLoad,
    ReplicaPhase,
    ScaleDecision,
    choose_victims,
    decide,
)

__all__ = [
    "AutoscalingSnapshot",
    "AutoscalingState",
    "ReplicaLoad",
    "ReplicaPhase",
    "ScaleDecision",
    "choose_victims",
    "decide",
]
