"""Per-tenant rate limits as token buckets: requests per minute, tokens per minute, a budget.

Owns the pure decision: given a tenant's limits, the time (passed in) and its bucket state,
admit the request or say which limit refused it and how long until it would pass. A bucket
holds up to one minute's allowance and refills continuously, so a tenant may burst up to its
per-minute limit and then proceeds at the steady rate. Requests are charged on admission; tokens
are charged when the answer finishes (``charge_tokens``, with the usage the replica reported),
so the token bucket may go below zero and then refuses until it has refilled above zero. The
budget is a lifetime count of tokens that never refills. No clock, no IO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RateLimits:
    """One tenant's limits; ``None`` means unlimited."""

    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    token_budget: int | None = None


@dataclass(frozen=True, slots=True)
class RateState:
    """A tenant's buckets: levels at ``updated_s``; ``None`` before its first request."""

    requests: float | None = None
    tokens: float | None = None
    updated_s: float | None = None
    spent_tokens: int = 0  # tokens charged against the budget so far


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    reason_code: str  # ok | requests | tokens | budget
    retry_after_s: float = 0.0
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float = 0.0  # until the request bucket is full again
    reset_tokens_s: float = 0.0


def _refill(level: float | None, cap: int | None, dt_s: float) -> float | None:
    if cap is None:
        return None
    if level is None:
        return float(cap)
    return min(float(cap), level + dt_s * cap / 60.0)


def refill(limits: RateLimits, state: RateState, now_s: float) -> RateState:
    """The buckets as they stand at ``now_s`` (time never runs backwards here)."""
    dt_s = 0.0 if state.updated_s is None else max(0.0, now_s - state.updated_s)
    return replace(
        state,
        requests=_refill(state.requests, limits.requests_per_min, dt_s),
        tokens=_refill(state.tokens, limits.tokens_per_min, dt_s),
        updated_s=now_s,
    )


def _until(level: float, target: float, cap: int) -> float:
    """Seconds until a bucket of per-minute ``cap`` refills from ``level`` to ``target``."""
    return max(0.0, (target - level) * 60.0 / cap)


def decide(limits: RateLimits, now_s: float, state: RateState) -> tuple[RateDecision, RateState]:
    """Admit one request (taking a request token) or refuse it with the limit that refused."""
    s = refill(limits, state, now_s)
    rpm, tpm = limits.requests_per_min, limits.tokens_per_min
    reset_r = _until(s.requests, float(rpm), rpm) if s.requests is not None and rpm else 0.0
    reset_t = _until(s.tokens, float(tpm), tpm) if s.tokens is not None and tpm else 0.0
    remaining_t = max(0, math.floor(s.tokens)) if s.tokens is not None else None
    if limits.token_budget is not None and s.spent_tokens >= limits.token_budget:
        return RateDecision(False, "budget", 0.0, None, remaining_t), s
    if s.requests is not None and rpm is not None and s.requests < 1.0:
        wait = _until(s.requests, 1.0, rpm)
        return RateDecision(False, "requests", wait, 0, remaining_t, reset_r, reset_t), s
    if s.tokens is not None and tpm is not None and s.tokens <= 0.0:
        wait = _until(s.tokens, 1.0, tpm)
        return RateDecision(False, "tokens", wait, None, 0, reset_r, reset_t), s
    remaining_r: int | None = None
    if s.requests is not None and rpm is not None:
        level = s.requests - 1.0
        s = replace(s, requests=level)
        reset_r, remaining_r = _until(level, float(rpm), rpm), math.floor(level)
    return RateDecision(True, "ok", 0.0, remaining_r, remaining_t, reset_r, reset_t), s


def decide_tokens(
    limits: RateLimits, now_s: float, state: RateState
) -> tuple[RateDecision, RateState]:
    """May work that is charged only by its tokens (a batch or async job line) start now? The
    budget and the tokens-per-minute bucket decide; no request token is taken."""
    s = refill(limits, state, now_s)
    tpm = limits.tokens_per_min
    remaining_t = max(0, math.floor(s.tokens)) if s.tokens is not None else None
    if limits.token_budget is not None and s.spent_tokens >= limits.token_budget:
        return RateDecision(False, "budget", 0.0, None, remaining_t), s
    if s.tokens is not None and tpm is not None and s.tokens <= 0.0:
        return RateDecision(False, "tokens", _until(s.tokens, 1.0, tpm), None, 0), s
    return RateDecision(True, "ok", 0.0, None, remaining_t), s


def charge_tokens(limits: RateLimits, state: RateState, tokens: int, now_s: float) -> RateState:
    """Take ``tokens`` (an answer's usage) from the token bucket and the budget."""
    s = refill(limits, state, now_s)
    level = s.tokens - tokens if s.tokens is not None else None
    return replace(s, tokens=level, spent_tokens=s.spent_tokens + max(0, tokens))
