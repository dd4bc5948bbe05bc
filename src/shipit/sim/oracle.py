"""The oracle a replay's replica-seconds are compared with: what the traffic needed, at best.

Per window (10 s by default), the fewest replicas whose capacity serves the work of the
requests arriving in it, at least one, summed over the windows and times the window. A
request's work is timed with the replica's own step-time model: its prompt in chunks of the
step token budget (each chunk a step of its own), and its output as its share of decode steps
of a full batch (the most a replica holds: ``max_num_seqs``, capped by the gateway's
``max_concurrency``) at the request's mean context. The oracle knows the future, starts
replicas instantly and runs them at 100 % busy: no real policy reaches it; it is the floor the
ratio is taken against. Pure, no clock, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from shipit.engine.sim_timing import ReplicaTiming, StepShape
from shipit.sim.results import SimRequest

WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class Oracle:
    window_s: float
    replicas: tuple[int, ...]  # per window

    @property
    def replica_seconds(self) -> float:
        return sum(self.replicas) * self.window_s

    @property
    def peak(self) -> int:
        return max(self.replicas, default=0)


def prefill_s(timing: ReplicaTiming, req: SimRequest) -> float:
    """``req``'s prompt alone on a replica: its time to first token with nothing else running."""
    chunk = timing.model.engine.max_num_batched_tokens
    total, pos = 0.0, 0
    while pos < req.prompt_tokens:
        n = min(chunk, req.prompt_tokens - pos)
        # A one-token chunk would read as a decode; a two-token one costs the same.
        total += timing.step_time(StepShape.of_spans([(pos, max(n, 2))]))
        pos += n
    return total


def request_work_s(timing: ReplicaTiming, req: SimRequest, batch: int) -> float:
    """Replica-seconds ``req`` takes on a replica that batches ``batch`` decodes."""
    context = req.prompt_tokens + req.output_tokens // 2
    step_s = timing.step_time(StepShape.of_decodes(batch, batch * context))
    return prefill_s(timing, req) + req.output_tokens * step_s / batch


def oracle(
    trace: Sequence[SimRequest],
    timing: ReplicaTiming,
    *,
    end_s: float,
    max_concurrency: int,
    start_s: float = 0.0,
    window_s: float = WINDOW_S,
) -> Oracle:
    """The oracle's replicas per window over ``[start_s, end_s)``."""
    batch = max(1, min(timing.model.engine.max_num_seqs, max_concurrency))
    windows = max(1, math.ceil((end_s - start_s) / window_s))
    work = [0.0] * windows
    for req in trace:
        if start_s <= req.arrival_s < end_s:
            work[int((req.arrival_s - start_s) // window_s)] += request_work_s(timing, req, batch)
    return Oracle(window_s, tuple(max(1, math.ceil(w / window_s - 1e-9)) for w in work))
