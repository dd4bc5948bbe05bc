"""The fleet simulator's models of demand and of a plane's queue (no engine steps at this scale).

**Service.** A replica is ``concurrency`` slots; a request holds one slot for its service
time ``input_len / prefill_tokens_per_s + output_len / decode_tokens_per_s`` (the per-request
token rates on a busy replica), and its first token comes ``input_len /
prefill_tokens_per_s`` after it is admitted. Lengths are the trace's means (or the config's).

**Demand.** A total rate curve (requests/s per step, from a trace or a rate series, repeated
to cover the run) is split over the client regions by their shares; with ``diurnal`` > 0 each
region's share follows its own local day (a cosine with its peak at 14:00 local and its
trough at 02:00 at ``1 - diurnal`` of the peak), renormalised so the total keeps the curve.
Arrivals in each tick are Poisson draws from a seeded generator.

**A plane's queue.** The plane's gateway is one queue in front of ``slots = ready replicas x
concurrency`` servers (M/G/c). In a tick with no backlog and offered load below the slots,
the wait tail is Erlang C with the Allen-Cunneen correction (``capacity.queueing``):
``P(wait > t) = C(c, a) exp(-(c/S - lambda) t / ((ca^2 + cs^2) / 2))``. Overloaded, or while
a backlog drains, the queue is a fluid: the backlog moves linearly by ``(lambda - c/S) dt``
and a request arriving at a moment waits the backlog ahead of it over the service rate;
requests that would wait beyond ``queue_timeout_s`` are dropped. A request meets the SLO when
network latency + wait + its prefill is within ``ttft_slo_ms``.

Pure: no clock, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from shipit.capacity.queueing import erlang_c


@dataclass(frozen=True, slots=True)
class ServiceModel:
    concurrency: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    input_len: float
    output_len: float

    @property
    def prefill_s(self) -> float:
        return self.input_len / self.prefill_tokens_per_s

    @property
    def service_s(self) -> float:
        return self.prefill_s + self.output_len / self.decode_tokens_per_s

    @property
    def tokens_per_request(self) -> float:
        return self.input_len + self.output_len


@dataclass(frozen=True, slots=True)
class RegionShape:
    name: str
    utc_offset_h: float
    share: float  # normalised: the shares sum to 1
    residency: str | None = None


@dataclass(frozen=True, slots=True)
class DemandModel:
    """A total rate curve (one rate per ``step_s``) split over client regions."""

    rates_rps: tuple[float, ...]
    step_s: float
    regions: tuple[RegionShape, ...]
    diurnal: float = 0.0

    def total_rps(self, t_s: float) -> float:
        i = int(t_s // self.step_s) % len(self.rates_rps)
        return self.rates_rps[i]

    def region_weights(self, t_s: float) -> tuple[float, ...]:
        """Each region's part of the total at ``t_s`` (they sum to 1)."""
        if self.diurnal <= 0:
            return tuple(r.share for r in self.regions)
        raw = []
        for r in self.regions:
            local_h = (t_s / 3600.0 + r.utc_offset_h) % 24.0
            day = 0.5 * (1.0 + math.cos(2 * math.pi * (local_h - 14.0) / 24.0))  # 1 at 14:00
            raw.append(r.share * (1.0 - self.diurnal + self.diurnal * day))
        total = sum(raw)
        return tuple(w / total for w in raw)

    def region_rps(self, t_s: float) -> tuple[float, ...]:
        total = self.total_rps(t_s)
        return tuple(total * w for w in self.region_weights(t_s))


def normalise_regions(regions: Sequence[RegionShape]) -> tuple[RegionShape, ...]:
    total = sum(r.share for r in regions)
    return tuple(RegionShape(r.name, r.utc_offset_h, r.share / total, r.residency) for r in regions)


_VAR = 1.0  # (ca^2 + cs^2) / 2 with Poisson arrivals and exponential service


@lru_cache(maxsize=65536)
def _erlang_c(slots: int, load_tenths: int) -> float:
    return erlang_c(slots, load_tenths / 10.0)


def wait_probability(slots: int, load: float) -> float:
    """Erlang C, with its vanishing tail skipped: far below saturation (more than 8 standard
    deviations of the load under the slots) the chance of waiting is under 1e-14."""
    if load <= 0:
        return 0.0
    if load >= slots:
        return 1.0
    if (slots - load) > 8.0 * math.sqrt(load) + 8.0:
        return 0.0
    return _erlang_c(slots, round(load * 10))


@dataclass(slots=True)
class QueueTick:
    """One plane's queue over one tick: how to score each chunk of its arrivals."""

    stationary: bool
    p_wait: float = 0.0  # stationary: P(wait > 0)
    decay_per_s: float = 0.0  # stationary: the wait tail's rate
    wait0_s: float = 0.0  # fluid: the wait at the tick's start
    wait1_s: float = 0.0  # fluid: the wait at its end
    dropped: float = 0.0  # requests over the queue timeout
    completed: float = 0.0
    down: bool = False  # no slots at all

    def met_fraction(self, budget_s: float) -> float:
        """The share of this tick's arrivals whose wait is within ``budget_s``."""
        if budget_s < 0 or self.down:
            return 0.0
        if self.stationary:
            return 1.0 - min(1.0, self.p_wait * math.exp(-self.decay_per_s * budget_s))
        lo, hi = sorted((self.wait0_s, self.wait1_s))
        if budget_s >= hi:
            return 1.0
        if budget_s < lo:
            return 0.0
        return (budget_s - lo) / (hi - lo) if hi > lo else 1.0


def queue_tick(
    *,
    slots: int,
    arrivals: float,
    backlog: float,
    service_s: float,
    dt: float,
    queue_timeout_s: float,
) -> tuple[QueueTick, float, float]:
    """The tick's queue, the backlog after it, and the requests in service (mean)."""
    lam = arrivals / dt
    if slots <= 0:
        dropped = arrivals + backlog  # nothing serves: they time out at the gateway
        return QueueTick(False, dropped=dropped, down=True), 0.0, 0.0
    load = lam * service_s
    mu = slots / service_s
    if backlog <= 0 and load < slots:
        tick = QueueTick(
            True,
            p_wait=wait_probability(slots, load),
            decay_per_s=(mu - lam) / _VAR,
            completed=arrivals,
        )
        return tick, 0.0, load
    end = backlog + (lam - mu) * dt
    cap = mu * queue_timeout_s
    dropped = max(end - cap, 0.0)
    end = min(max(end, 0.0), cap)
    served = max(min(mu * dt, backlog + arrivals), 0.0)
    tick = QueueTick(
        False,
        wait0_s=backlog / mu,
        wait1_s=end / mu,
        dropped=dropped,
        completed=served,
    )
    return tick, end, float(slots) if end > 0 else min(load, float(slots))
