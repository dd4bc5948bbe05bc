"""What a fleet simulation reports: one ``RequestResult`` per request and the run's totals.

``SimResult`` derives the figures the benchmarks print (TTFT SLO attainment, P99, requests not
served, replica-seconds, peak replicas, replica starts). Plain records; no behaviour beyond
derived figures, no clock, no IO.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request of a trace. ``deadline_s`` is absolute (simulated time); a streamed answer
    has its first byte at the first token, a plain one only when it is complete (which decides
    whether a replica failure may still be retried)."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    priority: int = 0
    deadline_s: float | None = None
    stream: bool = True
    # The prompt's shared-prefix structure (a trace's ``hash_ids``): each id one block of
    # ``prefix_block_tokens`` tokens, equal ids at equal positions equal content. Empty: the
    # prompt shares nothing.
    prefix_blocks: tuple[int, ...] = ()
    # The client region a fleet trace names for it (``region`` column); None: not given.
    region: str | None = None
    prefix_block_tokens: int = 512


@dataclass(frozen=True, slots=True)
class ReplicaKill:
    """The replica ``replica_id`` (``r0``, ``r1``... in start order) dies at ``at_s``."""

    at_s: float
    replica_id: str


@dataclass(frozen=True, slots=True)
class RequestResult:
    request_id: str
    arrival_s: float
    status: int  # 200, or the error status the client got
    reason_code: str  # "ok", "queue_full", "shed", "cold_start", "queue_timeout", ...
    ttft_s: float | None = None  # arrival to first token, when one came
    e2e_s: float | None = None  # arrival to the last token, when served
    attempts: int = 0
    replica_id: str | None = None  # where it was served (or last tried)


@dataclass(slots=True)
class SimResult:
    policy: str
    requests: list[RequestResult] = field(default_factory=list)
    replica_seconds: float = 0.0
    peak_replicas: int = 0
    scale_events: int = 0  # replicas started

    @property
    def served(self) -> list[RequestResult]:
        return [r for r in self.requests if r.status == 200]

    @property
    def ttft_s(self) -> list[float]:
        """TTFT of every served request, in completion order."""
        return [r.ttft_s for r in self.requests if r.status == 200 and r.ttft_s is not None]

    @property
    def dropped(self) -> int:
        """Requests the client got an error for (refused, held too long, failed)."""
        return sum(1 for r in self.requests if r.status != 200)

    def statuses(self) -> Counter[tuple[int, str]]:
        return Counter((r.status, r.reason_code) for r in self.requests)

    def attainment(self, ttft_target_s: float) -> float:
        """Fraction of all requests served with TTFT within the target (errors miss it)."""
        total = len(self.requests)
        met = sum(1 for t in self.ttft_s if t <= ttft_target_s)
        return met / total if total else 1.0

    def ttft_p99_s(self) -> float:
        """P99 TTFT over all requests, an error counting as infinitely slow."""
        served = self.ttft_s
        if self.dropped * 100 > len(served) + self.dropped:
            return math.inf
        return percentile(served, 99)


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1)] if data else 0.0
