"""Arrival processes: when each session of an open-loop run is sent.

Owns the pure maths of constant, Poisson and gamma (bursty) inter-arrival times, seeded so a
run can be repeated exactly. Returns offsets in seconds from the start of the run; it must not
sleep, read clocks or do IO (the runner turns offsets into sends).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from shipit.core.errors import InvalidRequestError

ArrivalKind = Literal["constant", "poisson", "gamma"]
ARRIVAL_KINDS: tuple[str, ...] = ("constant", "poisson", "gamma")


def arrival_offsets_s(
    *,
    kind: str,
    rate_rps: float,
    count: int,
    burstiness: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Offsets (s) of ``count`` arrivals at a mean of ``rate_rps`` per second; the first is 0.

    ``gamma`` draws gaps from Gamma(shape=burstiness, scale=1/(rate*burstiness)): the mean gap
    stays 1/rate, burstiness 1 is Poisson, below 1 clumps requests, above 1 evens them out
    (the same convention as vLLM's benchmark_serving).
    """
    if rate_rps <= 0:
        raise InvalidRequestError(
            f"rate must be > 0 requests/s, got {rate_rps}; use --concurrency for a closed loop",
            field="rate",
        )
    if burstiness <= 0:
        raise InvalidRequestError(
            f"burstiness must be > 0, got {burstiness} (1 = Poisson, <1 burstier)",
            field="burstiness",
        )
    if count <= 0:
        return []
    rng = np.random.default_rng(seed)
    if kind == "constant":
        gaps = np.full(count - 1, 1.0 / rate_rps)
    elif kind == "poisson":
        gaps = rng.exponential(1.0 / rate_rps, size=count - 1)
    elif kind == "gamma":
        gaps = rng.gamma(burstiness, 1.0 / (rate_rps * burstiness), size=count - 1)
    else:
        raise InvalidRequestError(
            f"unknown arrival process {kind!r}; use one of {', '.join(ARRIVAL_KINDS)}",
            field="arrival",
        )
    offsets = np.concatenate(([0.0], np.cumsum(gaps)))
    return [float(x) for x in offsets]


def scale_trace_offsets_s(timestamps_s: list[float], *, speed: float) -> list[float]:
    """Shift a trace to start at 0 and replay it ``speed`` times faster (2.0 = half the gaps)."""
    if speed <= 0:
        raise InvalidRequestError(
            f"trace speed must be > 0, got {speed} (2.0 replays twice as fast)",
            field="trace_speed",
        )
    if not timestamps_s:
        return []
    first = min(timestamps_s)
    return [(t - first) / speed for t in timestamps_s]
