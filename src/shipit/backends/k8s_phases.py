"""A replica pod's cold start in phases, from the API server's own timestamps.

``pod_phases`` reads the pod (its creation time, the ``PodScheduled`` condition, the replica
container's ``startedAt``) and its Events (``Scheduled``, ``Pulled``, ``Started``) and returns
the phases the pod has finished: ``schedule`` (created to bound to a node), ``pull`` (bound to
image pulled) and ``container_start`` (image pulled to container running). What follows, the
replica's own process start, weights and warm-up, then the wait until it is ready, is reported
by the replica and measured by the gateway (``services.cold_starts``). Timestamps come from the
cluster, not from when the watch delivered them, so an API outage does not stretch a phase.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from lightkube.resources.core_v1 import Event, Pod

CONTAINER = "replica"


def _event_at(e: Event) -> datetime | None:
    return e.eventTime or e.firstTimestamp or e.lastTimestamp


def _ours(e: Event) -> bool:
    """Kubelet Events about the replica container (or about the whole pod)."""
    path = e.involvedObject.fieldPath if e.involvedObject is not None else None
    return path is None or path == f"spec.containers{{{CONTAINER}}}"


def _times(events: Iterable[Event], reason: str) -> list[datetime]:
    return sorted(
        at for e in events if e.reason == reason and _ours(e) and (at := _event_at(e)) is not None
    )


def _scheduled_at(pod: Pod, events: list[Event]) -> datetime | None:
    for c in (pod.status.conditions if pod.status else None) or []:
        if c.type == "PodScheduled" and c.status == "True" and c.lastTransitionTime is not None:
            return c.lastTransitionTime
    found = _times(events, "Scheduled")
    return found[0] if found else None


def _started_at(pod: Pod, events: list[Event]) -> datetime | None:
    for cs in (pod.status.containerStatuses if pod.status else None) or []:
        running = cs.state.running if cs.state is not None else None
        if cs.name == CONTAINER and running is not None and running.startedAt is not None:
            return running.startedAt
    found = _times(events, "Started")
    return found[0] if found else None


def pod_phases(pod: Pod, events: Iterable[Event]) -> tuple[tuple[str, float], ...]:
    """The phases finished so far, in order, in seconds. A mark the cluster did not record
    (e.g. no ``Pulled`` Event: they expire after an hour) folds its time into the next phase."""
    evs = list(events)
    created = pod.metadata.creationTimestamp if pod.metadata is not None else None
    scheduled = _scheduled_at(pod, evs)
    started = _started_at(pod, evs)
    pulls = [t for t in _times(evs, "Pulled") if started is None or t <= started]
    marks = (
        ("schedule", scheduled),
        ("pull", pulls[-1] if pulls else None),
        ("container_start", started),
    )
    out: list[tuple[str, float]] = []
    prev = created
    for phase, at in marks:
        if at is None:
            continue
        if prev is not None:
            out.append((phase, round(max((at - prev).total_seconds(), 0.0), 3)))
        prev = at
    return tuple(out)
