"""Demand curves for procurement: a rate series turned into replicas needed per step.

Owns the step from traffic to replicas over time: arrival timestamps bucketed into a rate
series, a series repeated to cover whole days, and each step's rate sized at the SLO by the
same code as ``shipit plan replicas`` (``sizing``), once per distinct rate. Pure: no IO, no
clock; the CLI reads files and passes numbers in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
from shipit.capacity.deployment import Deployment
from shipit.capacity.inputs import SloTargets, TrafficProfile
from shipit.capacity.procurement import DemandCurve
from shipit.capacity.sizing import slot_sizer
from shipit.core.errors import InvalidRequestError


def rates_from_timestamps(timestamps_s: Sequence[float], *, bucket_s: float) -> tuple[float, ...]:
    """Requests per second in consecutive ``bucket_s`` buckets from the first arrival on.

    The last bucket is kept only if it is full (a partial one would read as a dip)."""
    if bucket_s <= 0:
        raise InvalidRequestError(f"bucket_s={bucket_s} must be > 0", field="bucket_s")
    if not timestamps_s:
        raise InvalidRequestError("no arrivals to build a rate series from", field="trace")
    start, end = min(timestamps_s), max(timestamps_s)
    full = max(1, math.floor((end - start) / bucket_s))
    counts = [0] * full
    for t in timestamps_s:
        i = int((t - start) // bucket_s)
        if i < full:
            counts[i] += 1
    return tuple(c / bucket_s for c in counts)


def repeat_to_days(rates: Sequence[float], *, step_s: float, days: float) -> tuple[float, ...]:
    """``rates`` (one step each of ``step_s``) repeated, then cut, to cover ``days`` days."""
    if days <= 0:
        raise InvalidRequestError(f"days={days} must be > 0", field="days")
    if not rates:
        raise InvalidRequestError("an empty rate series cannot be repeated", field="rates")
    steps = max(1, round(days * 86400.0 / step_s))
    return tuple(rates[i % len(rates)] for i in range(steps))


def demand_curve(
    d: Deployment,
    traffic: TrafficProfile,
    slo: SloTargets,
    rates_rps: Sequence[float],
    *,
    step_s: float,
    queue_model: str = "erlang-c",
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> DemandCurve:
    """Replicas needed at ``slo`` in each step, with the lengths and burstiness of ``traffic``."""
    if not rates_rps or min(rates_rps) < 0:
        raise InvalidRequestError(
            "a rate series needs at least one step and no negative rate", field="rates"
        )
    sizer = slot_sizer(d, traffic, slo, queue_model=queue_model, calibration=calibration)
    sized: dict[float, int] = {}
    for r in rates_rps:
        if r not in sized:
            sized[r] = sizer.best(r)[0] if r > 0 else 0
    tokens = sum(rates_rps) * step_s * (traffic.input_len_mean + traffic.output_len_mean)
    return DemandCurve(
        step_s=step_s,
        replicas=tuple(sized[r] for r in rates_rps),
        gpus_per_replica=d.tp,
        tokens=tokens,
    )
