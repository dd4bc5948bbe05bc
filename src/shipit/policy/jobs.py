"""How many job requests (batch lines, async requests) may run now: a pure decision.

Jobs fill idle capacity: once no interactive request has been in flight or waiting for
``idle_after_s``, they may take ``idle_share`` of the replica slots (all of them by default);
otherwise they keep to ``max_share`` of the slots (rounded down), so interactive requests
always find most slots free. The quiet period matters: closed-loop clients leave the fleet
empty for an instant between two requests, and jobs that took every slot then would make the
next interactive request wait for a whole job answer. Jobs already running above the share
finish; no new ones start until the count falls below it.
``job_slots(config, snapshot, state) -> (decision, state)``; ``now_s`` is in the snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.config.jobs import JobsConfig


@dataclass(frozen=True, slots=True)
class JobSlotsSnapshot:
    now_s: float
    capacity: int  # replica slots on routable replicas, every deployment
    in_flight: int  # requests holding a slot now, jobs included
    queued: int  # requests waiting in the admission queues
    jobs_in_flight: int  # job requests this worker runs now


@dataclass(frozen=True, slots=True)
class JobSlotsState:
    last_interactive_s: float | None = None  # when interactive load was last seen


@dataclass(frozen=True, slots=True)
class JobSlotsDecision:
    limit: int  # the most job requests that may run now
    reason_code: str  # "idle", "shared", "no_capacity"
    reason: str


def job_slots(
    config: JobsConfig, snapshot: JobSlotsSnapshot, state: JobSlotsState
) -> tuple[JobSlotsDecision, JobSlotsState]:
    now = snapshot.now_s
    interactive = max(0, snapshot.in_flight - snapshot.jobs_in_flight)
    if interactive or snapshot.queued:
        state = JobSlotsState(now)
    if snapshot.capacity <= 0:
        return JobSlotsDecision(0, "no_capacity", "no routable replica"), state
    last = state.last_interactive_s
    if last is None or now - last >= config.idle_after_s:
        limit = math.floor(config.idle_share * snapshot.capacity)
        why = (
            f"no interactive load for {config.idle_after_s:g}s: jobs may take idle_share "
            f"{config.idle_share:g} of {snapshot.capacity} slots"
        )
        return JobSlotsDecision(limit, "idle", why), state
    limit = math.floor(config.max_share * snapshot.capacity)
    why = (
        f"{interactive} interactive in flight, {snapshot.queued} waiting (or within "
        f"idle_after_s): jobs keep to max_share {config.max_share:g} of {snapshot.capacity} slots"
    )
    return JobSlotsDecision(limit, "shared", why), state
