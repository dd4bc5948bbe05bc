"""How many job requests (batch lines, async requests) may run now: a pure decision.

Jobs fill idle capacity: with no interactive request in flight or waiting, they may take
``idle_share`` of the replica slots (all of them by default); under interactive load they keep
to ``max_share`` of the slots (rounded down), so interactive requests always find most slots
free. Jobs already running above the share finish; no new ones start until the count falls
below it. ``decide(config, snapshot)`` shape, without state; ``now`` is not needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.config.jobs import JobsConfig


@dataclass(frozen=True, slots=True)
class JobSlotsSnapshot:
    capacity: int  # replica slots on routable replicas, every deployment
    in_flight: int  # requests holding a slot now, jobs included
    queued: int  # requests waiting in the admission queues
    jobs_in_flight: int  # job requests this worker runs now


@dataclass(frozen=True, slots=True)
class JobSlotsDecision:
    limit: int  # the most job requests that may run now
    reason_code: str  # "idle", "shared", "no_capacity"
    reason: str


def job_slots(config: JobsConfig, snapshot: JobSlotsSnapshot) -> JobSlotsDecision:
    if snapshot.capacity <= 0:
        return JobSlotsDecision(0, "no_capacity", "no routable replica")
    interactive = max(0, snapshot.in_flight - snapshot.jobs_in_flight)
    if interactive == 0 and snapshot.queued == 0:
        limit = math.floor(config.idle_share * snapshot.capacity)
        why = (
            f"no interactive load: jobs may take idle_share {config.idle_share:g} of "
            f"{snapshot.capacity} slots"
        )
        return JobSlotsDecision(limit, "idle", why)
    limit = math.floor(config.max_share * snapshot.capacity)
    why = (
        f"{interactive} interactive in flight, {snapshot.queued} waiting: jobs keep to "
        f"max_share {config.max_share:g} of {snapshot.capacity} slots"
    )
    return JobSlotsDecision(limit, "shared", why)
