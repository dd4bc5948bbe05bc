"""The frozen request snapshot the routing and queueing policies read: ``RequestView``.

A ``RequestView`` is built once at the gateway's edge from an HTTP request (model, adapter,
prompt tokens or text, priority, deadline, session key, stream flag, routing override); the
replica side is ``core.fleet.ReplicaRecord``. Policies take these and nothing else from the
outside world, so the same policy runs in the gateway and in the simulator. This module imports
only the standard library (and ``core.frozen``) and must not hold behaviour beyond small derived
properties.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.core.frozen import fast_init


@fast_init
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
    # How they were computed: "token" (the engine's token blocks), "text" (character chunks,
    # an approximation), "" (not hashed).
    prefix_hashing: str = ""
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
    # The prefix-cache salt (the tenant's, set by the gateway's auth): sent to the replica as
    # ``x-shipit-cache-salt`` and folded into ``prefix_hashes`` so tenants never share prefixes.
    cache_salt: str | None = None

    @property
    def forward_id(self) -> str:
        """The id sent to the replica and back to the client."""
        return self.client_request_id or self.request_id
