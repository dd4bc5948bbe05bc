"""Minimum replicas and GPUs for traffic at SLO percentiles, and the autoscaling they imply.

For each candidate per-replica concurrency ``C`` (a fixed ladder, capped by the KV pool at the
tail lengths) the replica must meet the TPOT SLO and leave TTFT budget at the tail lengths; the
fleet of ``N * C`` slots must then keep the queueing wait under the remaining TTFT budget at the
SLO percentile (Erlang C / M/D/c with burstiness, ``queueing``). The answer is the smallest
``N`` over feasible ``C``: a looser SLO only widens the choice, more traffic only raises each
``N``, so both directions are monotone by construction. Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.capacity.architecture import weight_bytes
from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
from shipit.capacity.deployment import Deployment
from shipit.capacity.inputs import SloTargets, TrafficProfile
from shipit.capacity.perf import PerfEstimate, estimate_perf, max_concurrency
from shipit.capacity.queueing import SERVICE_CV, wait_exceed_probability, wait_percentile_s
from shipit.core.errors import CapacityError, InvalidRequestError

CONCURRENCY_LADDER = (
    1,
    2,
    3,
    4,
    6,
    8,
    12,
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    1024,
)
SCALE_UP_DELAY_S = 30.0


@dataclass(frozen=True, slots=True)
class SlotOption:
    """One candidate concurrency per replica and the replicas it needs at a rate."""

    concurrency: int
    service_s: float
    tail: PerfEstimate
    ttft_budget_s: float


@dataclass(frozen=True, slots=True)
class AutoscalingSettings:
    target_concurrency_per_replica: int
    max_num_seqs: int
    min_replicas: int
    max_replicas: int
    cold_start_s: float
    scale_up_delay_s: float
    scale_down_delay_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    label: str
    tp: int
    replicas_peak: int
    replicas_mean: int
    gpus_peak: int
    gpus_mean: int
    concurrency_per_replica: int
    utilization_at_peak: float
    ttft_tail_ms: float
    tpot_tail_ms: float
    queue_wait_tail_ms: float
    e2e_mean_ms: float
    percentile: float
    bound: str
    autoscaling: AutoscalingSettings
    reason: str


def _options(
    d: Deployment, t: TrafficProfile, slo: SloTargets, cal: Calibration
) -> list[SlotOption]:
    cap = max_concurrency(d, t.input_tail, t.output_tail, cal)
    if cap < 1:
        raise CapacityError(
            f"{d.label()} cannot hold one {t.input_tail + t.output_tail}-token request; "
            "run `shipit plan vram` for what to change"
        )
    out = []
    for c in (x for x in CONCURRENCY_LADDER if x <= cap):
        tail = estimate_perf(
            d,
            input_len=t.input_tail,
            output_len=t.output_tail,
            concurrency=c,
            prefix_hit_rate=t.prefix_hit_rate,
            calibration=cal,
        )
        if tail.tpot_ms > slo.tpot_ms or tail.ttft_ms >= slo.ttft_ms:
            continue
        mean = estimate_perf(
            d,
            input_len=t.input_len_mean,
            output_len=t.output_len_mean,
            concurrency=c,
            prefix_hit_rate=t.prefix_hit_rate,
            calibration=cal,
        )
        out.append(SlotOption(c, mean.e2e_ms / 1e3, tail, (slo.ttft_ms - tail.ttft_ms) / 1e3))
    return out


def replicas_for_rate(
    opt: SlotOption, rate_rps: float, slo: SloTargets, *, arrival_cv: float, service_cv: float
) -> int:
    """Fewest replicas whose ``N * C`` slots keep P(wait > budget) within the SLO's tail."""
    if rate_rps <= 0:
        return 0
    allowed = 1.0 - slo.percentile / 100.0

    def ok(n: int) -> bool:
        return (
            wait_exceed_probability(
                servers=n * opt.concurrency,
                arrival_rate_per_s=rate_rps,
                service_s=opt.service_s,
                wait_s=opt.ttft_budget_s,
                arrival_cv=arrival_cv,
                service_cv=service_cv,
            )
            <= allowed
        )

    lo = max(1, math.ceil(rate_rps * opt.service_s / opt.concurrency))
    hi = lo
    while not ok(hi):
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


@dataclass(frozen=True, slots=True)
class SlotSizer:
    """A deployment's slot options at an SLO (those that meet it at tail lengths) and the queue
    model that sizes them: ``best(rate)`` is the fewest replicas, and the option, for a rate."""

    options: tuple[SlotOption, ...]
    slo: SloTargets
    cv: tuple[float, float]  # arrival and service coefficients of variation

    def best(self, rate_rps: float) -> tuple[int, SlotOption]:
        arrival_cv, service_cv = self.cv
        scored = [
            (
                replicas_for_rate(
                    o, rate_rps, self.slo, arrival_cv=arrival_cv, service_cv=service_cv
                ),
                o,
            )
            for o in self.options
        ]
        return min(scored, key=lambda x: (x[0], -x[1].concurrency))


def slot_sizer(
    d: Deployment,
    traffic: TrafficProfile,
    slo: SloTargets,
    *,
    queue_model: str = "erlang-c",
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> SlotSizer:
    """The sizer of ``d`` for ``traffic``'s lengths at ``slo``; refuses an unknown queue model
    and a deployment that cannot meet the SLO even with one request per replica."""
    if queue_model not in SERVICE_CV:
        raise InvalidRequestError(
            f"unknown queue model {queue_model!r}; use one of {', '.join(SERVICE_CV)}",
            field="queue_model",
        )
    options = _options(d, traffic, slo, calibration)
    if not options:
        raise _infeasible(d, traffic, slo, calibration)
    return SlotSizer(tuple(options), slo, (traffic.arrival_cv, SERVICE_CV[queue_model]))


def cold_start_s(d: Deployment, cal: Calibration = DEFAULT_CALIBRATION) -> float:
    """Seconds from start to serving: weights per GPU at load bandwidth, plus engine start."""
    return weight_bytes(d.model, d.weights) / d.tp / cal.weight_load_bytes_s + cal.engine_start_s


def _autoscaling(
    d: Deployment,
    t: TrafficProfile,
    slo: SloTargets,
    opt: SlotOption,
    n_peak: int,
    cv: tuple[float, float],
    cal: Calibration,
) -> AutoscalingSettings:
    start_s = cold_start_s(d, cal)
    # Traffic may climb for a cold start plus the scale-up delay before new capacity serves.
    floor_rps = min(t.peak, t.min_rps + t.ramp * (start_s + SCALE_UP_DELAY_S))
    n_min = replicas_for_rate(opt, floor_rps, slo, arrival_cv=cv[0], service_cv=cv[1])
    target = max(1, math.floor(t.peak * opt.service_s / n_peak))
    down_s = max(300.0, 5.0 * start_s)
    zero = " (scale to zero: requests wait a cold start)" if n_min == 0 else ""
    why = (
        f"target {target} in flight per replica = peak {t.peak:g} rps x {opt.service_s:.2f} s "
        f"/ {n_peak} replicas, under the SLO-feasible {opt.concurrency}; min {n_min}{zero} "
        f"covers trough {t.min_rps:g} rps + ramp {t.ramp:.3g} rps/s x "
        f"({start_s:.0f} s cold start + {SCALE_UP_DELAY_S:.0f} s scale-up delay); "
        f"scale-down delay {down_s:.0f} s = max(300 s, 5 cold starts) to avoid flapping"
    )
    return AutoscalingSettings(
        target_concurrency_per_replica=target,
        max_num_seqs=opt.concurrency,
        min_replicas=n_min,
        max_replicas=n_peak,
        cold_start_s=start_s,
        scale_up_delay_s=SCALE_UP_DELAY_S,
        scale_down_delay_s=down_s,
        reason=why,
    )


def _infeasible(
    d: Deployment, traffic: TrafficProfile, slo: SloTargets, calibration: Calibration
) -> CapacityError:
    one = estimate_perf(
        d,
        input_len=traffic.input_tail,
        output_len=traffic.output_tail,
        concurrency=1,
        prefix_hit_rate=traffic.prefix_hit_rate,
        calibration=calibration,
    )
    return CapacityError(
        f"{d.label()} cannot meet the SLO even with one request per replica: TTFT "
        f"{one.ttft_ms:.0f} ms (SLO {slo.ttft_ms:g}), TPOT {one.tpot_ms:.1f} ms (SLO "
        f"{slo.tpot_ms:g}) at p{slo.percentile:g} lengths; try more TP, a faster GPU or "
        "a looser SLO"
    )


def size_replicas(
    d: Deployment,
    traffic: TrafficProfile,
    slo: SloTargets,
    *,
    queue_model: str = "erlang-c",
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> ReplicaPlan:
    """Replicas and GPUs at peak and mean rate meeting ``slo`` at its percentile."""
    sizer = slot_sizer(d, traffic, slo, queue_model=queue_model, calibration=calibration)
    cv = sizer.cv
    n_peak, opt = sizer.best(traffic.peak)
    n_mean, _ = sizer.best(traffic.mean_rps)
    wait = wait_percentile_s(
        servers=n_peak * opt.concurrency,
        arrival_rate_per_s=traffic.peak,
        service_s=opt.service_s,
        percentile=slo.percentile,
        arrival_cv=cv[0],
        service_cv=cv[1],
    )
    util = traffic.peak * opt.service_s / (n_peak * opt.concurrency)
    why = (
        f"{n_peak} replicas x {opt.concurrency} slots at {traffic.peak:g} rps: each request holds "
        f"a slot {opt.service_s:.2f} s (mean lengths), slots {util:.0%} busy; p{slo.percentile:g} "
        f"queue wait {wait * 1e3:.0f} ms + TTFT {opt.tail.ttft_ms:.0f} ms <= {slo.ttft_ms:g} ms; "
        f"TPOT {opt.tail.tpot_ms:.1f} ms <= {slo.tpot_ms:g} ms at tail lengths "
        f"({traffic.input_tail}/{traffic.output_tail}); {queue_model} with arrival CV "
        f"{traffic.arrival_cv:g}"
    )
    return ReplicaPlan(
        label=d.label(),
        tp=d.tp,
        replicas_peak=n_peak,
        replicas_mean=n_mean,
        gpus_peak=n_peak * d.tp,
        gpus_mean=n_mean * d.tp,
        concurrency_per_replica=opt.concurrency,
        utilization_at_peak=util,
        ttft_tail_ms=opt.tail.ttft_ms,
        tpot_tail_ms=opt.tail.tpot_ms,
        queue_wait_tail_ms=wait * 1e3,
        e2e_mean_ms=opt.service_s * 1e3,
        percentile=slo.percentile,
        bound=opt.tail.bound,
        autoscaling=_autoscaling(d, traffic, slo, opt, n_peak, cv, calibration),
        reason=why,
    )
