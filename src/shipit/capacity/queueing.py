"""Queueing headroom: Erlang B/C and waiting-time tails for M/M/c, M/D/c and G/G/c queues.

A fleet of replicas is ``c`` servers where a server is one concurrency slot of a replica
(``replicas * slots``), each busy for one request's end-to-end time. Erlang C gives the chance a
request waits at all; the wait beyond that is exponential with rate ``c/s - lambda``. Bursty
arrivals and non-exponential service scale that wait by ``(ca^2 + cs^2) / 2`` (Allen-Cunneen),
which with ``cs = 0`` is the usual M/D/c approximation. Pure math; no SciPy.
"""

from __future__ import annotations

import math

_RECURRENCE_LIMIT = 5000


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability of M/M/c/c; stable for any size.

    Small ``c`` uses the recurrence ``B(k) = a B(k-1) / (k + a B(k-1))``; large ``c`` sums the
    Poisson terms near ``c`` in log space (terms 50 standard deviations away do not matter).
    """
    if servers < 0:
        raise ValueError(f"servers must be >= 0, got {servers}")
    if offered_load <= 0.0:
        return 0.0 if servers > 0 else 1.0
    a = offered_load
    if servers <= _RECURRENCE_LIMIT:
        b = 1.0
        for k in range(1, servers + 1):
            b = a * b / (k + a * b)
        return b
    lo = max(0, servers - math.ceil(50.0 * math.sqrt(a) + 50.0))
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(lo, servers + 1)]
    top = max(logs)
    total = sum(math.exp(x - top) for x in logs)
    return math.exp(logs[-1] - top) / total


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c; 1.0 when the load meets or exceeds ``c``."""
    if offered_load <= 0.0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    b = erlang_b(servers, offered_load)
    return servers * b / (servers - offered_load * (1.0 - b))


def _variability(arrival_cv: float, service_cv: float) -> float:
    return max((arrival_cv**2 + service_cv**2) / 2.0, 1e-6)


def wait_exceed_probability(
    *,
    servers: int,
    arrival_rate_per_s: float,
    service_s: float,
    wait_s: float,
    arrival_cv: float = 1.0,
    service_cv: float = 1.0,
) -> float:
    """P(queueing wait > ``wait_s``) for ``servers`` slots each busy ``service_s`` per request."""
    if arrival_rate_per_s <= 0.0:
        return 0.0
    if wait_s < 0.0:
        return 1.0
    load = arrival_rate_per_s * service_s
    if load >= servers:
        return 1.0
    p_wait = erlang_c(servers, load)
    decay_per_s = servers / service_s - arrival_rate_per_s
    return min(1.0, p_wait * math.exp(-decay_per_s * wait_s / _variability(arrival_cv, service_cv)))


def wait_percentile_s(
    *,
    servers: int,
    arrival_rate_per_s: float,
    service_s: float,
    percentile: float,
    arrival_cv: float = 1.0,
    service_cv: float = 1.0,
) -> float:
    """The queueing wait at ``percentile`` (0-100); ``inf`` for an unstable queue."""
    load = arrival_rate_per_s * service_s
    if load >= servers:
        return math.inf
    tail = 1.0 - percentile / 100.0
    p_wait = erlang_c(servers, load)
    if p_wait <= tail:
        return 0.0
    decay_per_s = servers / service_s - arrival_rate_per_s
    return math.log(p_wait / tail) * _variability(arrival_cv, service_cv) / decay_per_s


SERVICE_CV = {"erlang-c": 1.0, "md-c": 0.0}
