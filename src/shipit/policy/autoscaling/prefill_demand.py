"""Prefill demand: the replicas the prompts' prefill alone keeps busy, for long-prompt traffic.

Little's law sizes the fleet in requests in service, and a replica's target (what it holds x
``target_utilization``) assumes the requests it holds share it at no cost to their first
token. A replica prefills one prompt at a time, though (its step budget goes to the oldest
prompt first): with 12,000-token prompts a replica holding 11 requests spends most of its time
prefilling, and a request queues behind the prompts before its own for seconds. What the
prompts need is prefill time: the snapshot counts the arrivals' prompts' prefill alone on an
idle replica (the step-time model's, as the TTFT guard reads it), so the prefill seconds
arriving a second over the stable window are the replicas the prefill keeps busy, and
``prefill_utilization`` of a replica is what one should spend on it (headroom for the decodes
sharing its steps and for prompts arriving together). The policy takes the larger of the two
needs. Counted at arrival, not at the first token: a backlog draining after a cold start
would otherwise read as a burst of prefill. The live gateway counts prompt tokens x the
replicas' measured prefill time a token (``PaceBook``); the simulator, the step-time model's
prefill of the prompt alone. Nothing counted, or ``prefill_utilization`` null: no prefill
demand, the rule is off. Pure.
"""

from __future__ import annotations

import math

from shipit.config.autoscaling import AutoscalingConfig

Samples = tuple[tuple[float, float], ...]  # (tick time, prefill seconds arrived so far)


def samples(config: AutoscalingConfig, kept: Samples, prefill_s: float, now: float) -> Samples:
    """The stable window's samples of the counter, this tick's added."""
    return tuple(
        (t, v) for t, v in (*kept, (now, prefill_s)) if now - t <= config.autoscaling_window_s
    )


def need(config: AutoscalingConfig, kept: Samples, now: float) -> tuple[int, float]:
    """Replicas the prefill arriving over the window needs at ``prefill_utilization``, and
    the prefill seconds a second it is: over the part of the window seen so far, but never
    over less than a panic window (two ticks a moment apart, a woken one after a clump of
    long prompts, read a few seconds of prefill as tens of replicas' worth)."""
    if config.prefill_utilization is None or len(kept) < 2:
        return 0, 0.0
    span_s = max(kept[-1][0] - kept[0][0], config.panic_window_s)
    busy = (kept[-1][1] - kept[0][1]) / span_s
    return math.ceil(busy / config.prefill_utilization - 1e-9), busy
