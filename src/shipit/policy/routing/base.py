"""The records every routing stage shares, and the helpers the stages are built from.

``RouteSnapshot`` (what the driver saw: ``now_s``, the request, the replicas it may use, the
prefix hits it looked up, the version weights), ``RoutingState`` (what one composed policy
carries between decisions: a tie-break turn, the round-robin cursor, the power-of-two draw
counter, the session ring), ``RouteDecision`` (where the request goes and why) and
``RouteContext`` (one decision's working view, handed to filters, scorers and pickers). The
helpers are the shared rules: ``routable``, ``with_free_slot``, ``lower_load``, ``pick``
(best score, ties rotate) and the uniform ``draw`` of a counter-based generator. Nothing here
reads a clock, does IO, or keeps state outside the returned ``RoutingState``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shipit.config.gateway import RoutingConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.frozen import fast_init
from shipit.core.views import RequestView


@fast_init
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
    wait_for: str | None = None  # no replica now: the request waits for this one's slot


@fast_init
@dataclass(frozen=True, slots=True)
class ReplicaPace:
    """What the driver measured of one replica, for queue-aware affinity and balance in tokens.

    ``service_s``: the mean time a request holds one of its slots (0: not measured yet);
    ``pending_tokens``: prompt tokens it still has to compute (prompt minus the cached prefix)
    of the requests placed there, at the snapshot's time; ``waiting``: gateway waiters that
    chose to wait for this replica's slot (their cache holder); ``prefill_s_per_token``: its
    measured prefill time a token (0: not measured, the configured one applies)."""

    replica_id: str
    service_s: float = 0.0
    pending_tokens: int = 0
    waiting: int = 0
    prefill_s_per_token: float = 0.0


@fast_init
@dataclass(frozen=True, slots=True)
class RouteSnapshot:
    """What the driver saw when it asked: read once, passed whole."""

    now_s: float
    request: RequestView
    replicas: tuple[ReplicaRecord, ...]  # those it may use (after failover exclusion)
    # How many leading blocks of ``request.prefix_hashes`` each replica holds, looked up in
    # the driver's ``PrefixIndex`` (empty when the policy does not use prefixes).
    prefix_hits: tuple[tuple[str, int], ...] = ()
    # Traffic share per ``ReplicaRecord.version`` (rollouts); empty: every version alike.
    version_weights: tuple[tuple[str, float], ...] = ()
    # Per replica pace (empty: not measured; affinity then compares requests, not tokens).
    paces: tuple[ReplicaPace, ...] = ()
    # When this request first chose to wait for its cache holder (None: it has not).
    holding_since_s: float | None = None


@dataclass(frozen=True, slots=True)
class SessionRing:
    """The consistent-hash ring of ``session_affinity``: rebuilt only when ``ids`` change."""

    ids: frozenset[str] = frozenset()
    points: tuple[int, ...] = ()  # sorted
    owners: tuple[str, ...] = ()  # owner of each point


@fast_init
@dataclass(frozen=True, slots=True)
class RoutingState:
    """What one composed policy carries from one decision to the next."""

    turn: int = 0  # requests routed so far: rotates ties so an idle fleet spreads them
    last_id: str | None = None  # the replica chosen last (round robin's cursor)
    draws: int = 0  # power-of-two samples taken: with the seed, the generator's position
    ring: SessionRing = field(default_factory=SessionRing)


class Pick(NamedTuple):
    """A picker's answer: the replica and the words of the decision (internal, never logged;
    a tuple because it is made on every decision)."""

    replica: ReplicaRecord | None  # None: the request waits (for its cache holder)
    reason_code: str
    reason: str
    load_adapter: str | None = None
    prefix_hit_blocks: int = 0
    draws: int = 0  # generator draws this pick used
    wait_for: str | None = None  # with no replica: the cache holder the request waits for


class RouteContext(NamedTuple):
    """One decision's working view (internal, never logged; a tuple because it is made on
    every decision). ``ready`` are the routable replicas of the snapshot, whatever their load
    (guards and the ring compare against them); ``weights`` are the composition's scorer
    weights; ``hits`` the snapshot's prefix hits."""

    name: str
    config: RoutingConfig
    snapshot: RouteSnapshot
    state: RoutingState
    ready: tuple[ReplicaRecord, ...]
    weights: tuple[tuple[str, float], ...]
    hits: Mapping[str, int]

    @property
    def request(self) -> RequestView:
        return self.snapshot.request

    def hit(self, replica_id: str) -> int:
        return self.hits.get(replica_id, 0)

    def pace(self, replica_id: str) -> ReplicaPace:
        for p in self.snapshot.paces:
            if p.replica_id == replica_id:
                return p
        return ReplicaPace(replica_id)


def routable(replicas: Sequence[ReplicaRecord], now_s: float) -> tuple[ReplicaRecord, ...]:
    """Ready and not ejected."""
    return tuple([r for r in replicas if r.routable(now_s)])


def with_free_slot(replicas: Sequence[ReplicaRecord]) -> tuple[ReplicaRecord, ...]:
    """Below its ``max_concurrency`` (the queue lives at the gateway, not on replicas)."""
    return tuple([r for r in replicas if r.in_flight < r.max_concurrency])


def lower_load(replica: ReplicaRecord) -> float:
    """Fewer in flight relative to the cap scores higher (0 idle, -1 full); the replica's own
    queue breaks ties."""
    return -(replica.load + 0.001 * replica.queue_depth)


def pick(candidates: Sequence[ReplicaRecord], scores: Sequence[float], *, offset: int = 0) -> int:
    """Index of the candidate with the highest score; ties go to the first one at or after
    ``offset`` (mod the count), so a rotating offset spreads an idle fleet's ties evenly."""
    n = len(candidates)
    if n == 0:
        raise ValueError("pick needs at least one candidate")
    best, best_score = -1, float("-inf")
    for i in range(n):
        j = (i + offset) % n
        if scores[j] > best_score:
            best, best_score = j, scores[j]
    return best


_MASK = (1 << 64) - 1


def draw(seed: int, counter: int) -> int:
    """The ``counter``-th 64-bit value of a splitmix64 stream seeded by ``seed``: a generator
    whose whole state is two ints, so decisions replay from the log."""
    z = (seed + (counter + 1) * 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)
