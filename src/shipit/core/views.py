"""Frozen snapshots the routing and queueing policies read: ``RequestView`` and ``ReplicaView``.

A ``RequestView`` is built once at the gateway's edge from an HTTP request (model, adapter,
prompt tokens or text, priority, deadline, session key, stream flag, routing override); a
``ReplicaView`` is the router service's snapshot of one replica (state, load, KV usage,
adapters). Policies take these and nothing else from the outside world, so the same policy
runs in the gateway and in the simulator. This module imports only the standard library and
must not hold behaviour beyond small derived properties.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ReplicaState(enum.Enum):
    """Where a replica is in its life, as the router sees it."""

    STARTING = "starting"  # process up, /health not yet 200
    READY = "ready"  # takes traffic
    DRAINING = "draining"  # finishes what it has, takes nothing new
    UNHEALTHY = "unhealthy"  # health check failing
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RequestView:
    """One inference request, parsed once at the edge; framework types never pass this point."""

    request_id: str
    deployment: str
    model: str  # what the client asked for: the base model or an adapter name
    adapter: str | None = None  # the LoRA adapter, when ``model`` names one
    prompt_text: str = ""  # the prompt (chat messages flattened) for prefix hashing
    prompt_token_ids: tuple[int, ...] | None = None  # when the client sent token ids
    prompt_tokens_estimate: int = 0
    # Chained hashes of the prompt's full blocks (token blocks when token ids are known,
    # text chunks otherwise), computed once at the edge for prefix-aware routing.
    prefix_hashes: tuple[int, ...] = ()
    max_tokens: int | None = None
    priority: int = 0  # lower runs first (0 is the default class)
    deadline_s: float | None = None  # absolute, on the gateway's monotonic clock
    session_key: str | None = None  # header or the ``user`` field
    stream: bool = False
    routing: str | None = None  # per-request policy override (``x-shipit-routing``)
    arrived_s: float = 0.0
    path: str = "/v1/chat/completions"
    # The client's ``x-request-id``: forwarded and echoed, never used as a key (clients may
    # repeat one); ``request_id`` is the gateway's own, unique id.
    client_request_id: str | None = None

    @property
    def forward_id(self) -> str:
        """The id sent to the replica and back to the client."""
        return self.client_request_id or self.request_id


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """The router's snapshot of one replica."""

    replica_id: str
    url: str
    state: ReplicaState = ReplicaState.READY
    in_flight: int = 0  # requests the gateway has on it now
    concurrency_target: int = 8  # most in flight the gateway sends it
    queue_depth: int = 0  # the replica's own waiting queue (from its metrics)
    kv_usage: float = 0.0  # 0..1, vLLM's kv_cache_usage_perc
    adapters: frozenset[str] = field(default_factory=frozenset)
    max_adapters: int = 4  # adapter slots on the replica
    ejected_until_s: float | None = None  # passive outlier ejection

    @property
    def free_slots(self) -> int:
        return max(self.concurrency_target - self.in_flight, 0)

    @property
    def load(self) -> float:
        """In flight as a fraction of the concurrency target."""
        return self.in_flight / self.concurrency_target if self.concurrency_target else 1.0

    def routable(self, now_s: float) -> bool:
        """Ready and not ejected: may be chosen (capacity is checked separately)."""
        if self.state is not ReplicaState.READY:
            return False
        return self.ejected_until_s is None or self.ejected_until_s <= now_s
