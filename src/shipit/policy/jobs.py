"""How many job requests (batch lines, async requests) may run now: a pure decision.

Jobs fill idle capacity: once no interactive request has been in flight or waiting for
``idle_after_s``, they may take ``idle_share`` of the replica slots (all of them by default);
otherwise they keep to ``max_share`` of the slots (rounded down), so interactive requests
always find most slots free. The quiet period matters: closed-loop clients leave the fleet
empty for an instant between two requests, and jobs that took every slot then would make the
next interactive request wait for a whole job answer. Jobs already running above the share
finish; no new ones start until the count falls below it.

Slots are not the whole story: a job request on a replica lengthens its batches, so an
interactive request beside it waits longer for its first token even with a free slot. The TTFT
guard (``ttft_tolerance``) watches interactive streams' time to first token and scales the share
down when it runs above its level without jobs:

- The level is measured, not assumed: when interactive load is present and the last
  measurement is older than ``calibrate_every_s``, no new job request starts (``calibrating``)
  until ``CALIBRATION_SAMPLES`` clean samples (requests during which no job ran) came in, or
  jobs have been quiet for ``CALIBRATION_MAX_S``. Clean samples keep a running mean and mean
  deviation (an exponentially weighted pair, as TCP keeps its round-trip time).
- Each sample taken while jobs ran is judged against that level: above
  ``(mean + 3 x deviation) x (1 + ttft_tolerance)`` (the tail the tolerance is about) halves the
  share's scale, at most once per ``CUT_COOLDOWN_S``; within ``mean x (1 + ttft_tolerance)`` it
  adds ``RAISE_STEP`` back, up to 1 (additive increase, multiplicative decrease).
``job_slots(config, snapshot, state) -> (decision, state)``; ``now_s`` is in the snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from shipit.config.jobs import JobsConfig

CALIBRATION_SAMPLES = 20
CALIBRATION_MAX_S = 10.0
CUT_COOLDOWN_S = 1.0
RAISE_STEP = 0.02
EWMA_ALPHA = 0.125  # TCP's weight for the mean; the deviation uses twice it
TAIL_DEVIATIONS = 3.0


@dataclass(frozen=True, slots=True)
class TtftSample:
    """One interactive stream's time to first token."""

    ttft_s: float
    clean: bool  # no job request ran from its arrival to its first token


@dataclass(frozen=True, slots=True)
class JobSlotsSnapshot:
    now_s: float
    capacity: int  # replica slots on routable replicas, every deployment
    in_flight: int  # requests holding a slot now, jobs included
    queued: int  # requests waiting in the admission queues
    jobs_in_flight: int  # job requests this worker runs now
    samples: tuple[TtftSample, ...] = ()  # interactive TTFTs since the last decision


@dataclass(frozen=True, slots=True)
class JobSlotsState:
    last_interactive_s: float | None = None  # when interactive load was last seen
    base_mean_s: float | None = None  # interactive TTFT with no job running (EWMA)
    base_dev_s: float = 0.0  # its mean deviation (EWMA)
    measured_s: float | None = None  # when the last calibration ended
    calibrating_since_s: float | None = None  # jobs quiet since then, during a calibration
    calibrating: bool = False
    clean_seen: int = 0  # clean samples in the current calibration
    scale: float = 1.0  # the guard's multiplier on max_share
    cut_s: float | None = None  # the guard's last cut


@dataclass(frozen=True, slots=True)
class JobSlotsDecision:
    limit: int  # the most job requests that may run now
    reason_code: str  # "idle", "shared", "guarded", "calibrating", "no_capacity"
    reason: str


def _fold(tol: float, snapshot: JobSlotsSnapshot, state: JobSlotsState) -> JobSlotsState:
    """The state with this decision's samples taken in."""
    mean, dev, scale, cut = state.base_mean_s, state.base_dev_s, state.scale, state.cut_s
    clean_seen = state.clean_seen
    for s in snapshot.samples:
        if s.clean:
            if mean is None:
                mean, dev = s.ttft_s, s.ttft_s / 2
            else:
                dev += 2 * EWMA_ALPHA * (abs(s.ttft_s - mean) - dev)
                mean += EWMA_ALPHA * (s.ttft_s - mean)
            clean_seen += 1
        elif mean is not None:
            if s.ttft_s > (mean + TAIL_DEVIATIONS * dev) * (1 + tol):
                if cut is None or snapshot.now_s - cut >= CUT_COOLDOWN_S:
                    scale, cut = scale / 2, snapshot.now_s
            elif s.ttft_s <= mean * (1 + tol):
                scale = min(1.0, scale + RAISE_STEP)
    return replace(
        state, base_mean_s=mean, base_dev_s=dev, scale=scale, cut_s=cut, clean_seen=clean_seen
    )


def _calibration(snapshot: JobSlotsSnapshot, state: JobSlotsState, every_s: float) -> JobSlotsState:
    """Start, continue or end a measurement of interactive TTFT without jobs."""
    now = snapshot.now_s
    if not state.calibrating:
        if state.measured_s is not None and now - state.measured_s < every_s:
            return state
        state = replace(state, calibrating=True, clean_seen=0, calibrating_since_s=None)
    quiet_since = state.calibrating_since_s
    if snapshot.jobs_in_flight:
        quiet_since = None  # the clock runs only while jobs are quiet
    elif quiet_since is None:
        quiet_since = now
    done = state.clean_seen >= CALIBRATION_SAMPLES or (
        quiet_since is not None and now - quiet_since >= CALIBRATION_MAX_S
    )
    if done:
        return replace(state, calibrating=False, measured_s=now, calibrating_since_s=None)
    return replace(state, calibrating_since_s=quiet_since)


def job_slots(
    config: JobsConfig, snapshot: JobSlotsSnapshot, state: JobSlotsState
) -> tuple[JobSlotsDecision, JobSlotsState]:
    now = snapshot.now_s
    interactive = max(0, snapshot.in_flight - snapshot.jobs_in_flight)
    if interactive or snapshot.queued:
        state = replace(state, last_interactive_s=now)
    tol = config.ttft_tolerance
    if tol is not None:
        state = _fold(tol, snapshot, state)
    if snapshot.capacity <= 0:
        return JobSlotsDecision(0, "no_capacity", "no routable replica"), state
    last = state.last_interactive_s
    if last is None or now - last >= config.idle_after_s:
        if state.calibrating:  # interactive load left: nothing to measure against
            state = replace(state, calibrating=False, calibrating_since_s=None)
        limit = math.floor(config.idle_share * snapshot.capacity)
        why = (
            f"no interactive load for {config.idle_after_s:g}s: jobs may take idle_share "
            f"{config.idle_share:g} of {snapshot.capacity} slots"
        )
        return JobSlotsDecision(limit, "idle", why), state
    base = math.floor(config.max_share * snapshot.capacity)
    why = (
        f"{interactive} interactive in flight, {snapshot.queued} waiting (or within "
        f"idle_after_s): jobs keep to max_share {config.max_share:g} of {snapshot.capacity} slots"
    )
    if tol is None:
        return JobSlotsDecision(base, "shared", why), state
    state = _calibration(snapshot, state, config.calibrate_every_s)
    if state.calibrating:
        why = (
            f"measuring interactive TTFT without jobs ({state.clean_seen} of "
            f"{CALIBRATION_SAMPLES} samples): no new job request starts"
        )
        return JobSlotsDecision(0, "calibrating", why), state
    if state.scale >= 1.0 or state.base_mean_s is None:
        return JobSlotsDecision(base, "shared", why), state
    limit = math.floor(config.max_share * state.scale * snapshot.capacity)
    why = (
        f"interactive TTFT ran above {1 + tol:g}x its level without jobs "
        f"({state.base_mean_s * 1e3:.0f} ms mean): jobs keep to {state.scale:.2f} of max_share "
        f"{config.max_share:g}, {limit} of {snapshot.capacity} slots"
    )
    return JobSlotsDecision(limit, "guarded", why), state
