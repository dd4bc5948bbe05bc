"""The driver-owned measurements behind ``ReplicaPace``: service times, tokens still to compute
and who waits for which cache holder.

Like ``PrefixIndex`` it is an object the driver (the live router, the simulator's gateway)
owns and feeds, never ``decide``: ``placed`` when a decision named a replica (the request's
uncached prompt tokens join that replica's backlog), ``prefilled`` at its first token (they
leave it), ``done`` when its slot came back (the time it held the slot updates the replica's
mean service time, an exponentially weighted mean), ``waits`` when a decision chose to wait
for a holder, ``gone`` when a waiter left the queue. ``paces`` is what goes into a
``RouteSnapshot``. Time comes in as numbers; no clock, no IO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from shipit.config.gateway import PrefixCacheConfig
from shipit.core.views import RequestView
from shipit.policy.routing.affinity import uncached_tokens
from shipit.policy.routing.base import ReplicaPace, RouteDecision

# Weight of the newest service time in the mean: about the last ten requests count.
SERVICE_WEIGHT = 0.2


def computed_tokens(
    config: PrefixCacheConfig, request: RequestView, decision: RouteDecision
) -> int:
    """The prompt tokens the chosen replica computes for ``request`` (its cached prefix off)."""
    block = config.block_size_tokens
    prompt = max(request.prompt_tokens_estimate, len(request.prefix_hashes) * block)
    return uncached_tokens(prompt, decision.prefix_hit_blocks, block)


class PaceBook:
    """Per replica: mean service seconds, pending tokens; per waiter: the holder it waits for."""

    def __init__(self) -> None:
        self._service_s: dict[str, float] = {}
        self._pending: Counter[str] = Counter()
        self._waiting_for: dict[str, str] = {}  # request id -> replica id
        self._since: dict[str, float] = {}  # request id -> when it first chose to wait

    def placed(self, replica_id: str, request_id: str, tokens: int) -> None:
        self.gone(request_id)
        self._pending[replica_id] += tokens

    def prefilled(self, replica_id: str, tokens: int) -> None:
        """The request's first token came: its ``tokens`` are computed, off the backlog."""
        left = self._pending[replica_id] - tokens
        if left > 0:
            self._pending[replica_id] = left
        else:
            self._pending.pop(replica_id, None)

    def done(self, replica_id: str, tokens: int, service_s: float | None) -> None:
        """A slot came back: ``tokens`` (0 when ``prefilled`` took them off already) leave
        the backlog; ``service_s`` (None: the attempt failed or was aborted, its time says
        nothing of the pace) feeds the mean."""
        self.prefilled(replica_id, tokens)
        if service_s is not None and service_s >= 0:
            mean = self._service_s.get(replica_id)
            self._service_s[replica_id] = (
                service_s if mean is None else mean + SERVICE_WEIGHT * (service_s - mean)
            )

    def waits(self, request_id: str, replica_id: str, now_s: float) -> None:
        self._waiting_for[request_id] = replica_id
        self._since.setdefault(request_id, now_s)

    def holding_since(self, request_id: str) -> float | None:
        """When ``request_id`` first chose to wait for its holder (the bound runs from it)."""
        return self._since.get(request_id)

    def gone(self, request_id: str) -> None:
        """The request left the queue (placed, refused, timed out)."""
        self._waiting_for.pop(request_id, None)
        self._since.pop(request_id, None)

    def forget(self, replica_id: str) -> None:
        self._service_s.pop(replica_id, None)
        self._pending.pop(replica_id, None)
        for rid in [r for r, h in self._waiting_for.items() if h == replica_id]:
            del self._waiting_for[rid]

    def pending_tokens(self, replica_id: str) -> int:
        return self._pending[replica_id]

    def paces(self, replica_ids: Iterable[str], *, asking: str = "") -> tuple[ReplicaPace, ...]:
        """The snapshot's paces; waiters count for their holder, except the one ``asking``."""
        waiting = Counter(h for r, h in self._waiting_for.items() if r != asking)
        return tuple(
            ReplicaPace(rid, self._service_s.get(rid, 0.0), self._pending[rid], waiting[rid])
            for rid in replica_ids
        )
