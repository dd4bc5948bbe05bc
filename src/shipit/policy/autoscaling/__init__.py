"""Pure autoscaling policy: how many replicas, and which to stop.

``ReplicaLoad`` and ``ReplicaPhase`` are deprecated aliases kept for one release so that
``sim.autoscaling`` keeps working while it moves to ``core.fleet.ReplicaRecord`` and
``ReplicaState``; new code must not use them.
"""

from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling.policy import (
    AutoscalingSnapshot,
    AutoscalingState,
    ScaleDecision,
    choose_victims,
    decide,
)

ReplicaPhase = ReplicaState  # deprecated: use core.fleet.ReplicaState


def ReplicaLoad(  # noqa: N802 - the old record's name, kept for one release
    replica_id: str, phase: ReplicaState, in_flight: int, since_s: float
) -> ReplicaRecord:
    """Deprecated: build a ``core.fleet.ReplicaRecord`` instead (``state``, ``state_since_s``)."""
    return ReplicaRecord(replica_id, "", state=phase, in_flight=in_flight, state_since_s=since_s)


__all__ = [
    "AutoscalingSnapshot",
    "AutoscalingState",
    "ReplicaLoad",
    "ReplicaPhase",
    "ScaleDecision",
    "choose_victims",
    "decide",
]
