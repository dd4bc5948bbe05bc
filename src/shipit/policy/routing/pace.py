"""The driver-owned measurements behind ``ReplicaPace``: service times, tokens still to compute
and who waits for which cache holder.

Like ``PrefixIndex`` it is an object the driver (the live router, the simulator's gateway)
owns and feeds, never ``decide``: ``placed`` when a decision named a replica (the request's
uncached prompt tokens join that replica's backlog), ``prefilled`` at its first token (they
leave it), ``done`` when its slot came back (the time it held the slot updates the replica's
mean service time, an exponentially weighted mean), ``waits`` when a decision chose to wait
for a holder, ``gone`` when a waiter left the queue. ``paces`` is what goes into a
``RouteSnapshot``. Time comes in as numbers; no clock, no IO.

The backlog is what a replica has still to compute, as of ``now_s``: the replica computes the
prompts it was sent in the order it got them, in chunks, from the moment each reaches it, so
with ``prefill_s_per_token`` (the replicas' prefill time a token) each placed prompt is taken
to be computed at that pace from when the one before it is done, and counts only its part not
yet computed. Counted whole until its first token instead, a long prompt the replica has
nearly finished kept its replica looking busy for seconds (the backlog of a replica with one
long prompt read several times what it still had to do), and the token guard sent follow-up
turns away from the replica holding their conversation. The pace is measured: the seconds
the replica had prompts to compute (from a placement on an empty backlog until the backlog
is empty again) over the prompt tokens whose first token came, since it joined; until
``PACE_MIN_TOKENS`` were, ``prefill_s_per_token``. Long prompts' attention and the decodes
sharing their steps make it slower than a prefill alone. The first token takes a prompt off
the backlog at once, whatever the pace said.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import accumulate

from shipit.config.gateway import PrefixCacheConfig
from shipit.core.views import RequestView
from shipit.policy.routing.affinity import uncached_tokens
from shipit.policy.routing.base import ReplicaPace, RouteDecision

# Weight of the newest service time in the mean: about the last ten requests count.
SERVICE_WEIGHT = 0.2
# Prompt tokens a replica computes before its measured pace replaces the configured one.
PACE_MIN_TOKENS = 4096


def computed_tokens(
    config: PrefixCacheConfig, request: RequestView, decision: RouteDecision
) -> int:
    """The prompt tokens the chosen replica computes for ``request`` (its cached prefix off)."""
    block = config.block_size_tokens
    prompt = max(request.prompt_tokens_estimate, len(request.prefix_hashes) * block)
    return uncached_tokens(prompt, decision.prefix_hit_blocks, block)


class PaceBook:
    """Per replica: mean service seconds, the prompts it still computes; per waiter: the holder
    it waits for. ``prefill_s_per_token`` > 0: prompts are computed at that pace (above); 0: a
    prompt counts whole until its first token."""

    def __init__(self, *, prefill_s_per_token: float = 0.0) -> None:
        self._per_token_s = prefill_s_per_token
        self._busy_since: dict[str, float] = {}  # replica id -> its backlog's start
        self._busy_s: dict[str, float] = {}  # replica id -> closed busy seconds
        self._last_drop_s: dict[str, float] = {}  # replica id -> a prompt last left its backlog
        self._prefilled: Counter[str] = Counter()  # replica id -> tokens first-tokened
        self._measured: dict[str, float] = {}  # replica id -> measured prefill s a token
        self._service_s: dict[str, float] = {}
        # replica id -> request id -> (uncached prompt tokens, when placed), in placement order
        self._backlog: dict[str, dict[str, tuple[int, float]]] = {}
        self._waiting_for: dict[str, str] = {}  # request id -> replica id
        self._chains: dict[str, _Chain] = {}  # replica id -> its backlog's finish times
        self._since: dict[str, float] = {}  # request id -> when it first chose to wait

    def placed(self, replica_id: str, request_id: str, tokens: int, *, now_s: float) -> None:
        self.gone(request_id)
        if tokens > 0:
            self._busy_since.setdefault(replica_id, now_s)
            backlog = self._backlog.setdefault(replica_id, {})
            chain = self._chains.get(replica_id)
            if chain is not None and request_id not in backlog:
                chain.append(tokens, now_s)  # last in the order: the chain grows by one
            else:
                self._chains.pop(replica_id, None)
            backlog[request_id] = (tokens, now_s)

    def prefilled(self, replica_id: str, request_id: str, *, now_s: float) -> None:
        """The request's first token came at ``now_s``: its prompt is computed, off the
        backlog, and counts toward the replica's measured pace."""
        entry = self._drop(replica_id, request_id, now_s)
        if entry is None:
            return
        self._prefilled[replica_id] += entry[0]
        tokens = self._prefilled[replica_id]
        if tokens >= PACE_MIN_TOKENS:
            since = self._busy_since.get(replica_id)
            busy_s = self._busy_s.get(replica_id, 0.0) + (0.0 if since is None else now_s - since)
            self._measured[replica_id] = busy_s / tokens

    def _drop(self, replica_id: str, request_id: str, now_s: float) -> tuple[int, float] | None:
        backlog = self._backlog.get(replica_id)
        if backlog is None:
            return None
        entry = backlog.pop(request_id, None)
        if entry is not None:
            self._last_drop_s[replica_id] = now_s
            self._chains.pop(replica_id, None)  # every later prompt's finish may move
        if not backlog:  # the replica has no prompt left to compute: a busy spell ends
            del self._backlog[replica_id]
            since = self._busy_since.pop(replica_id, now_s)
            self._busy_s[replica_id] = self._busy_s.get(replica_id, 0.0) + max(now_s - since, 0.0)
        return entry

    def prefill_s_per_token(self, replica_id: str) -> float:
        """The replica's measured prefill time a token (the configured one until measured)."""
        return self._measured.get(replica_id, self._per_token_s)

    def fleet_prefill_s_per_token(self) -> float:
        """A prompt token's prefill time on this deployment's replicas: the mean of those
        measured (the configured one until any is)."""
        measured = self._measured
        return sum(measured.values()) / len(measured) if measured else self._per_token_s

    def done(
        self, replica_id: str, request_id: str, service_s: float | None, *, now_s: float
    ) -> None:
        """A slot came back at ``now_s``: the request leaves the backlog (if its first token
        did not take it off already); ``service_s`` (None: the attempt failed or was aborted,
        its time says nothing of the pace) feeds the mean."""
        self._drop(replica_id, request_id, now_s)
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
        self._backlog.pop(replica_id, None)
        self._chains.pop(replica_id, None)
        books = (self._measured, self._busy_since, self._busy_s, self._last_drop_s)
        for book in (*books, self._prefilled):
            book.pop(replica_id, None)
        for rid in [r for r, h in self._waiting_for.items() if h == replica_id]:
            del self._waiting_for[rid]

    def pending_tokens(self, replica_id: str, now_s: float) -> int:
        """Prompt tokens the replica has still to compute at ``now_s`` (see the module)."""
        backlog = self._backlog.get(replica_id)
        if not backlog:
            return 0
        per_token = self.prefill_s_per_token(replica_id)
        if per_token <= 0:
            return sum(tokens for tokens, _ in backlog.values())
        chain = self._chains.get(replica_id)
        if chain is None or chain.per_token != per_token:
            chain = self._chains[replica_id] = _Chain(
                per_token, self._last_drop_s.get(replica_id, -math.inf), backlog.values()
            )
        return chain.pending(now_s)

    def paces(
        self, replica_ids: Iterable[str], *, now_s: float, asking: str = ""
    ) -> tuple[ReplicaPace, ...]:
        """The snapshot's paces at ``now_s``; waiters count for their holder, except the one
        ``asking``."""
        # Usually nobody waits for a holder: no Counter to build on every decision then.
        waiting: Mapping[str, int] = (
            Counter(h for r, h in self._waiting_for.items() if r != asking)
            if self._waiting_for
            else {}
        )
        service, measured, backlog = self._service_s, self._measured, self._backlog
        return tuple(
            [
                ReplicaPace(
                    rid,
                    service.get(rid, 0.0),
                    self.pending_tokens(rid, now_s) if rid in backlog else 0,
                    waiting.get(rid, 0) if waiting else 0,
                    measured.get(rid, 0.0),
                )
                for rid in replica_ids
            ]
        )


class _Chain:
    """One replica's backlog as a chain of finish times, built when the backlog changes (not
    on every decision): the replica computes its prompts in turn, the first from its last drop
    at the earliest, each from its placement or the end of the one before, whichever is later,
    at ``per_token`` seconds a token. ``pending`` at a time is then a binary search and a few
    steps, not a walk of the whole backlog for every replica at every decision."""

    __slots__ = ("cum", "ends", "per_token", "start_s", "tokens")

    def __init__(
        self, per_token: float, free_s: float, entries: Iterable[tuple[int, float]]
    ) -> None:
        self.per_token = per_token
        self.start_s = free_s  # the replica's last drop: the first prompt starts no earlier
        pairs = list(entries)
        self.tokens = [tokens for tokens, _ in pairs]
        self.cum = list(accumulate(self.tokens, initial=0))  # tokens before each prompt
        ends: list[float] = []  # finish time of each prompt, in order (non-decreasing)
        end = ends.append
        for tokens, placed_s in pairs:
            if placed_s > free_s:
                free_s = placed_s
            free_s += tokens * per_token
            end(free_s)
        self.ends = ends

    def append(self, tokens: int, placed_s: float) -> None:
        free_s = self.ends[-1] if self.ends else self.start_s
        if placed_s > free_s:
            free_s = placed_s
        self.ends.append(free_s + tokens * self.per_token)
        self.tokens.append(tokens)
        self.cum.append(self.cum[-1] + tokens)

    def pending(self, now_s: float) -> int:
        """Prompt tokens not yet computed at ``now_s``: none of the prompts finished by then;
        each one finishing later counts min(tokens, round(seconds it still needs / per
        token)); from the first that has not started, all of them whole (each starts no
        earlier than the one before it ends)."""
        ends, tokens, per_token = self.ends, self.tokens, self.per_token
        n = len(ends)
        left = 0
        for i in range(bisect_right(ends, now_s), n):
            ahead_s = ends[i] - now_s
            if ahead_s >= tokens[i] * per_token:
                return left + self.cum[n] - self.cum[i]
            ahead = round(ahead_s / per_token)
            left += ahead if ahead < tokens[i] else tokens[i]
        return left
