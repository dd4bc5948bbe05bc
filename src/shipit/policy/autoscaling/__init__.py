"""Pure autoscaling policy: how many replicas, and which to stop (over ``core.fleet`` records)."""

from shipit.policy.autoscaling.policy import (
    AutoscalingSnapshot,
    AutoscalingState,
    ScaleDecision,
    choose_victims,
    decide,
)

__all__ = [
    "AutoscalingSnapshot",
    "AutoscalingState",
    "ScaleDecision",
    "choose_victims",
    "decide",
]
