"""The shape every routing policy shares: ``RouteDecision``, the ``RoutingPolicy`` protocol,
and the filters → weighted scorers → pick pipeline the policies are built from.

A policy sees a ``RequestView`` and the replicas' ``ReplicaRecord``s and names one replica (or
none: every replica is busy or not ready, so the request waits in the gateway's queue). It
never reads a clock (``now_s`` comes in), never does IO and never sees a framework type; its
only state is in-memory bookkeeping (a cursor, a hash index) that the caller feeds with
``observe``. The same objects run in the gateway and in the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes, and why.

    ``reason_code`` is a short, bounded label (a metric label: ``prefix_hit``,
    ``least_loaded``...); ``reason`` is the sentence a person reads in logs and headers.
    """

    replica_id: str | None  # None: nothing can take it now; the request keeps waiting
    policy: str
    reason_code: str
    reason: str
    load_adapter: str | None = None  # load this LoRA adapter on the replica first
    prefix_hit_blocks: int = 0


class RoutingPolicy(Protocol):
    name: str

    def decide(
        self, request: RequestView, replicas: Sequence[ReplicaRecord], now_s: float
    ) -> RouteDecision:
        """Choose a replica; deterministic given the inputs and the policy's own state."""
        ...

    def observe(self, request: RequestView, decision: RouteDecision) -> None:
        """Told once the request was sent where ``decision`` said (feeds indexes)."""
        ...


Scorer = Callable[[ReplicaRecord], float]  # higher is better


def routable(replicas: Sequence[ReplicaRecord], now_s: float) -> list[ReplicaRecord]:
    """Filter: ready and not ejected."""
    return [r for r in replicas if r.routable(now_s)]


def with_free_slot(replicas: Sequence[ReplicaRecord]) -> list[ReplicaRecord]:
    """Filter: below its concurrency target (the queue lives at the gateway, not on replicas)."""
    return [r for r in replicas if r.in_flight < r.max_concurrency]


def lower_load(replica: ReplicaRecord) -> float:
    """Scorer: fewer in flight relative to the target; the replica's own queue breaks ties."""
    return -(replica.load + 0.001 * replica.queue_depth)


def pick(
    candidates: Sequence[ReplicaRecord],
    scorers: Sequence[tuple[float, Scorer]],
    *,
    tiebreak_offset: int = 0,
) -> ReplicaRecord:
    """The candidate with the highest weighted score; ties go to the first one at or after
    ``tiebreak_offset`` (a rotating offset spreads an idle fleet's ties evenly)."""
    if not candidates:
        raise ValueError("pick needs at least one candidate")
    n = len(candidates)
    best: ReplicaRecord | None = None
    best_score = float("-inf")
    for i in range(n):
        r = candidates[(i + tiebreak_offset) % n]
        score = sum(w * s(r) for w, s in scorers)
        if score > best_score:
            best, best_score = r, score
    assert best is not None
    return best


def no_candidate(policy: str, replicas: Sequence[ReplicaRecord], now_s: float) -> RouteDecision:
    """The decision when nothing can take the request now: say which of the two cases."""
    ready = routable(replicas, now_s)
    if not ready:
        return RouteDecision(
            None, policy, "no_ready_replica", f"none of {len(replicas)} replicas is ready"
        )
    return RouteDecision(
        None, policy, "all_busy", f"all {len(ready)} ready replicas are at their concurrency target"
    )


def candidates_for(replicas: Sequence[ReplicaRecord], now_s: float) -> list[ReplicaRecord]:
    """The standard filter chain every policy starts with: routable, then a free slot."""
    return with_free_slot(routable(replicas, now_s))
