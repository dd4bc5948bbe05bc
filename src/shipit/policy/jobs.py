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
A batch has a completion window, so it need not run as fast as the share allows. With
interactive load present, ``finish_by`` paces batch lines to what their windows need: the fewest
lines at once that finish every batch by ``finish_by`` of its window, from the measured seconds
a line holds a slot (``line_s``) and the lines left, earliest window first (the
earliest-deadline-first bound: for each window, the lines due by then x ``line_s`` / the
seconds to its target, the largest of these, rounded up). Single async requests have no window
and count whole. Pacing only lowers the limit below the share; a batch behind its target (its
target passed, or closer than one line) takes the whole ``max_share``, and so does a need above
the TTFT guard's cut (``deadline``): a window is a promise, the guard a preference. Idle capacity
is not paced. Until a line time is measured, one batch line runs at a time (it measures it).

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
class Backlog:
    """Job lines left (queued or running) that share one completion window."""

    lines: int
    window_s: float | None = None  # the whole window; None: single async requests (no window)
    left_s: float | None = None  # seconds until the window ends


@dataclass(frozen=True, slots=True)
class JobSlotsSnapshot:
    now_s: float
    capacity: int  # replica slots on routable replicas, every deployment
    in_flight: int  # requests holding a slot now, jobs included
    queued: int  # requests waiting in the admission queues
    jobs_in_flight: int  # job requests this worker runs now
    samples: tuple[TtftSample, ...] = ()  # interactive TTFTs since the last decision
    backlog: tuple[Backlog, ...] = ()  # job lines left, by window
    line_s: float | None = None  # measured seconds a job line holds a slot; None: not yet
    interactive_seen_s: float | None = None  # when an interactive request last finished


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
    reason_code: str  # "idle", "shared", "paced", "deadline", "guarded", "calibrating",
    # "no_capacity"
    reason: str


@dataclass(frozen=True, slots=True)
class PacedNeed:
    """How many job lines must run at once to keep every window (``finish_by``)."""

    lines: int  # with ``behind``: every line due (the share is what they get)
    behind: bool  # a batch's target passed (or is closer than one line)
    why: str


def paced_need(finish_by: float, backlog: tuple[Backlog, ...], line_s: float) -> PacedNeed:
    """The earliest-deadline-first bound on the lines to run at once (see the module doc)."""
    urgent = sum(b.lines for b in backlog if b.window_s is None or b.left_s is None)
    timed = sorted(
        (b.left_s - (1.0 - finish_by) * b.window_s, b.lines)
        for b in backlog
        if b.window_s is not None and b.left_s is not None and b.lines > 0
    )
    rate, due, why = 0.0, 0, ""
    for target_s, lines in timed:
        due += lines
        if target_s <= line_s:
            return PacedNeed(
                urgent + due, True, f"{due} lines due by a target {target_s:.0f}s away: behind"
            )
        if due * line_s / target_s > rate:
            rate = due * line_s / target_s
            why = f"{due} lines x {line_s:.2f}s due within {target_s:.0f}s"
    lines = urgent + max(1 if due else 0, math.ceil(rate - 1e-9))  # a batch left: one at least
    if urgent:
        why = f"{urgent} async requests" + (f" + {why}" if why else "")
    return PacedNeed(lines, False, why or "no job line left")


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
    seen = snapshot.interactive_seen_s
    if seen is not None and (state.last_interactive_s is None or seen > state.last_interactive_s):
        state = replace(state, last_interactive_s=seen)  # finished between two decisions
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
        return _paced(config, snapshot, base, JobSlotsDecision(base, "shared", why)), state
    state = _calibration(snapshot, state, config.calibrate_every_s)
    if state.calibrating:
        why = (
            f"measuring interactive TTFT without jobs ({state.clean_seen} of "
            f"{CALIBRATION_SAMPLES} samples): no new job request starts"
        )
        return JobSlotsDecision(0, "calibrating", why), state
    if state.scale >= 1.0 or state.base_mean_s is None:
        return _paced(config, snapshot, base, JobSlotsDecision(base, "shared", why)), state
    limit = math.floor(config.max_share * state.scale * snapshot.capacity)
    why = (
        f"interactive TTFT ran above {1 + tol:g}x its level without jobs "
        f"({state.base_mean_s * 1e3:.0f} ms mean): jobs keep to {state.scale:.2f} of max_share "
        f"{config.max_share:g}, {limit} of {snapshot.capacity} slots"
    )
    return _paced(config, snapshot, base, JobSlotsDecision(limit, "guarded", why)), state


def job_demand(
    config: JobsConfig, backlog: tuple[Backlog, ...], line_s: float | None
) -> int | None:
    """The job lines the autoscaler should see as wanting a slot now: with pacing, those the
    windows need (one until a line is measured), whatever the share or the guard allow
    (idle capacity and calibration pauses included); None without pacing (every line left)."""
    if config.finish_by is None:
        return None
    if line_s is None:
        return sum(b.lines for b in backlog if b.window_s is None) + (1 if backlog else 0)
    need = paced_need(config.finish_by, backlog, line_s)
    return need.lines


def _paced(
    config: JobsConfig, snapshot: JobSlotsSnapshot, base: int, shared: JobSlotsDecision
) -> JobSlotsDecision:
    """The share's decision, lowered to what the windows need (or raised past the guard's
    cut, up to the share, when they need more)."""
    if config.finish_by is None or not snapshot.backlog:
        return shared
    if snapshot.line_s is None:  # not measured yet: one batch line at a time measures it
        urgent = sum(b.lines for b in snapshot.backlog if b.window_s is None)
        first = min(shared.limit, urgent + 1)
        why = f"measuring how long a line takes: {first} job slots until one is answered"
        return JobSlotsDecision(first, "paced", why) if first < shared.limit else shared
    need = paced_need(config.finish_by, snapshot.backlog, snapshot.line_s)
    if need.behind:
        if shared.limit >= base:
            return shared
        return JobSlotsDecision(base, "deadline", f"{need.why}: jobs take max_share, {base} slots")
    if need.lines < shared.limit:
        why = (
            f"{need.why} (finish_by {config.finish_by:g} of each window): {need.lines} job "
            f"slots of the {shared.limit} the share allows"
        )
        return JobSlotsDecision(need.lines, "paced", why)
    if need.lines > shared.limit and shared.reason_code == "guarded":
        limit = min(base, need.lines)
        why = f"{need.why}: above the TTFT guard's {shared.limit} slots, {limit} to keep the window"
        return JobSlotsDecision(limit, "deadline", why)
    return shared
