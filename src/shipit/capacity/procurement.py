"""Procurement: which capacity pools to buy for a demand curve, and what each choice costs.

Owns the capacity pools as priced records (reserved, on-demand, spot with its pre-emption rate
and notice), a demand curve as replicas needed per time step, and four buying policies over it:
all on-demand, reserved for the peak, a reserved baseline with an on-demand / spot mix sized to
the risk, and a SpotHedge-style policy (spot plus a fixed overprovision and on-demand fallback).
Each policy returns its cost, its SLO coverage and why. The curve is known ahead, so on-demand
and spot capacity is requested one obtain delay before it is needed and billed from the
request; a pre-empted spot replica leaves a hole from the end of its notice until its
replacement is ready, and the number of holes open at once is Poisson (pre-emptions x hole
length). Coverage is the expected share of steps where capacity is at least demand, from that
Poisson law, so it is exact and needs no random draws. Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.core.errors import InvalidRequestError
from shipit.core.fleet import CapacityPool

HOURS_PER_WEEK = 168.0


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One way to buy a GPU-hour: its price, how long a new one takes, and (spot) its risk."""

    pool: CapacityPool
    usd_per_gpu_hour: float
    obtain_delay_s: float = 0.0  # request to serving (boot + model load)
    preemptions_per_hour: float = 0.0  # per replica; spot only
    notice_s: float = 0.0  # warning before a pre-emption; spot only

    def __post_init__(self) -> None:
        if self.usd_per_gpu_hour < 0 or self.obtain_delay_s < 0 or self.notice_s < 0:
            raise InvalidRequestError(
                f"{self.pool.value} pool: price, obtain delay and notice must be >= 0, got "
                f"{self.usd_per_gpu_hour}, {self.obtain_delay_s}, {self.notice_s}",
                field="pool",
            )
        if self.preemptions_per_hour < 0:
            raise InvalidRequestError(
                f"{self.pool.value} pool: preemptions_per_hour={self.preemptions_per_hour} "
                "must be >= 0",
                field="preemptions_per_hour",
            )

    @property
    def hole_h(self) -> float:
        """Hours a pre-empted replica is missing: its replacement's obtain delay past the notice."""
        return max(0.0, self.obtain_delay_s - self.notice_s) / 3600.0


@dataclass(frozen=True, slots=True)
class Pools:
    """The pools a provider sells for one GPU; None where it does not sell that term."""

    on_demand: PoolSpec
    reserved: PoolSpec | None = None
    spot: PoolSpec | None = None


@dataclass(frozen=True, slots=True)
class DemandCurve:
    """Replicas needed at the SLO in each step of ``step_s`` seconds, and the tokens served."""

    step_s: float
    replicas: tuple[int, ...]
    gpus_per_replica: int = 1
    tokens: float = 0.0  # input + output tokens over the whole curve (for $/M tokens)

    def __post_init__(self) -> None:
        if self.step_s <= 0 or not self.replicas or min(self.replicas) < 0:
            raise InvalidRequestError(
                f"a demand curve needs step_s > 0 (got {self.step_s}) and at least one "
                f"non-negative replica count (got {len(self.replicas)} steps)",
                field="demand",
            )
        if self.gpus_per_replica < 1:
            raise InvalidRequestError(
                f"gpus_per_replica={self.gpus_per_replica} must be >= 1", field="tp"
            )

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def hours(self) -> float:
        return self.step_h * len(self.replicas)

    @property
    def peak(self) -> int:
        return max(self.replicas)


@dataclass(frozen=True, slots=True)
class ProcurementOutcome:
    """What one policy buys over the curve, what it costs and how often it covers demand."""

    policy: str
    reserved_replicas: int
    on_demand_replicas_peak: int
    spot_replicas_peak: int
    reserved_replica_hours: float
    on_demand_replica_hours: float
    spot_replica_hours: float
    usd_total: float
    usd_per_week: float
    usd_per_million_tokens: float | None
    coverage: float  # expected share of steps with capacity >= demand
    slo_met: bool  # coverage >= the target
    reason: str


@dataclass(frozen=True, slots=True)
class ProcurementComparison:
    outcomes: tuple[ProcurementOutcome, ...]
    recommended: str
    coverage_target: float
    reason: str


def poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean)."""
    if k < 0:
        return 0.0
    if mean <= 0.0:
        return 1.0
    log_term = -mean  # log P(X = 0)
    total = 0.0
    for i in range(k + 1):
        if i:
            log_term += math.log(mean / i)
        total += math.exp(log_term)
    return min(1.0, total)


def cover_needed(spot_replicas: int, spot: PoolSpec, target: float) -> int:
    """Fewest spare replicas so P(spot holes open at once <= spare) >= ``target``."""
    mean = spot_replicas * spot.preemptions_per_hour * spot.hole_h
    k = 0
    while poisson_cdf(k, mean) < target:
        k += 1
    return k


def _rises(series: list[int]) -> int:
    """Replicas added over the curve (each is billed for its obtain delay before serving)."""
    before, added = 0, 0
    for n in series:
        added += max(0, n - before)
        before = n
    return added


@dataclass(frozen=True, slots=True)
class _Plan:
    """Replicas per step in each pool, and the expected coverage of each step."""

    reserved: int
    on_demand: list[int]
    spot: list[int]
    coverage: list[float]
    fallback_od_replica_hours: float = 0.0


def _price(
    curve: DemandCurve, pools: Pools, plan: _Plan, target: float, policy: str, why: str
) -> ProcurementOutcome:
    h, tp = curve.step_h, curve.gpus_per_replica
    od, sp = pools.on_demand, pools.spot
    res_h = plan.reserved * curve.hours
    od_h = sum(plan.on_demand) * h + _rises(plan.on_demand) * od.obtain_delay_s / 3600.0
    od_h += plan.fallback_od_replica_hours
    sp_h = 0.0
    if sp is not None and any(plan.spot):
        # Each pre-emption's replacement is billed from its request, like any new replica.
        preemptions = sum(plan.spot) * h * sp.preemptions_per_hour
        sp_h = sum(plan.spot) * h + (_rises(plan.spot) + preemptions) * sp.obtain_delay_s / 3600
    res_price = pools.reserved.usd_per_gpu_hour if pools.reserved is not None else 0.0
    sp_price = sp.usd_per_gpu_hour if sp is not None else 0.0
    total = tp * (res_h * res_price + od_h * od.usd_per_gpu_hour + sp_h * sp_price)
    coverage = sum(plan.coverage) / len(plan.coverage)
    return ProcurementOutcome(
        policy=policy,
        reserved_replicas=plan.reserved,
        on_demand_replicas_peak=max(plan.on_demand, default=0),
        spot_replicas_peak=max(plan.spot, default=0),
        reserved_replica_hours=res_h,
        on_demand_replica_hours=od_h,
        spot_replica_hours=sp_h,
        usd_total=total,
        usd_per_week=total * HOURS_PER_WEEK / curve.hours,
        usd_per_million_tokens=total / curve.tokens * 1e6 if curve.tokens > 0 else None,
        coverage=coverage,
        slo_met=coverage >= target - 1e-12,
        reason=why,
    )


def all_on_demand(curve: DemandCurve, pools: Pools, *, target: float) -> ProcurementOutcome:
    """Every replica on demand, requested one obtain delay ahead of need."""
    n = len(curve.replicas)
    plan = _Plan(0, list(curve.replicas), [0] * n, [1.0] * n)
    why = (
        f"on demand follows the curve (peak {curve.peak}); each added replica is paid "
        f"{pools.on_demand.obtain_delay_s:.0f} s before it serves"
    )
    return _price(curve, pools, plan, target, "all-on-demand", why)


def peak_reserved(curve: DemandCurve, pools: Pools, *, target: float) -> ProcurementOutcome:
    """The peak's replicas reserved for the whole curve: nothing to obtain, much idle."""
    if pools.reserved is None:
        raise InvalidRequestError(
            "this provider sells no reserved capacity; give a reserved price", field="reserved"
        )
    n = len(curve.replicas)
    plan = _Plan(curve.peak, [0] * n, [0] * n, [1.0] * n)
    busy = sum(curve.replicas) / (curve.peak * n) if curve.peak else 0.0
    why = f"{curve.peak} reserved replicas cover the peak; they are busy {busy:.0%} of the time"
    return _price(curve, pools, plan, target, "peak-reserved", why)


def _flex_costs(curve: DemandCurve, pools: Pools, target: float) -> list[tuple[int, int, int]]:
    """For each excess e over the reserve: (spot, on-demand incl. cover, cost rank) minimising
    the hourly price of covering e replicas at ``target``."""
    od, sp = pools.on_demand, pools.spot
    best: list[tuple[int, int, int]] = []
    covers = [0] * (curve.peak + 1)
    if sp is not None:
        covers = [cover_needed(s, sp, target) for s in range(curve.peak + 1)]
    # A spot replica-hour also pays, in expectation, its replacements' obtain delay.
    sp_eff = 0.0
    if sp is not None:
        sp_eff = sp.usd_per_gpu_hour * (1.0 + sp.preemptions_per_hour * sp.obtain_delay_s / 3600)
    for e in range(curve.peak + 1):
        options = [(0, e)]
        if sp is not None:
            options += [(s, e - s + covers[s]) for s in range(1, e + 1)]
        s, o = min(options, key=lambda so: (so[0] * sp_eff + so[1] * od.usd_per_gpu_hour, so[1]))
        best.append((s, o, covers[s]))
    return best


def _mix_plan(
    curve: DemandCurve, pools: Pools, reserved: int, flex: list[tuple[int, int, int]]
) -> _Plan:
    sp = pools.spot
    on_demand, spot, coverage = [], [], []
    for d in curve.replicas:
        s, o, spare = flex[max(0, d - reserved)]
        on_demand.append(o)
        spot.append(s)
        mean = s * sp.preemptions_per_hour * sp.hole_h if sp is not None else 0.0
        coverage.append(poisson_cdf(spare, mean))
    return _Plan(reserved, on_demand, spot, coverage)


def reserved_mix(curve: DemandCurve, pools: Pools, *, target: float) -> ProcurementOutcome:
    """A reserved baseline, then spot with on-demand cover for its holes, then on-demand.

    The baseline is the cheapest over every count from 0 to the peak; it lands where the
    quantile rule says: the last reserved replica is needed more than
    price(reserved) / price(flexible) of the time.
    """
    flex = _flex_costs(curve, pools, target)
    costs: list[tuple[float, int]] = []
    for r in range(curve.peak + 1 if pools.reserved is not None else 1):
        plan = _mix_plan(curve, pools, r, flex)
        costs.append((_price(curve, pools, plan, target, "", "").usd_total, r))
    _, r = min(costs)
    plan = _mix_plan(curve, pools, r, flex)
    busy = sum(1 for d in curve.replicas if d >= r) / len(curve.replicas) if r else 0.0
    od_price = pools.on_demand.usd_per_gpu_hour
    ratio = pools.reserved.usd_per_gpu_hour / od_price if pools.reserved is not None else 0.0
    parts = [
        f"reserve {r} (the {r}th is needed {busy:.0%} of the time; reserved/on-demand price "
        f"{ratio:.2f})"
        if r
        else "reserve none (no replica is needed often enough to pay for a reservation)"
    ]
    if pools.spot is not None and any(plan.spot):
        sp = pools.spot
        spare = max((o for o, s in zip(plan.on_demand, plan.spot, strict=True) if s), default=0)
        parts.append(
            f"spot up to {max(plan.spot)} above it ({sp.preemptions_per_hour:g} pre-emptions/h, "
            f"{sp.hole_h * 3600:.0f} s hole each) with up to {spare} on demand incl. the cover "
            f"that keeps each step covered with probability >= {target:g}"
        )
    else:
        parts.append("on demand above it (spot is not sold or costs more than it saves)")
    return _price(curve, pools, plan, target, "reserved+mix", "; ".join(parts))


def spot_hedge(
    curve: DemandCurve, pools: Pools, *, target: float, overprovision: int = 2, zones: int = 3
) -> ProcurementOutcome:
    """SpotHedge-style: spot for the whole curve plus ``overprovision`` spare spot replicas
    spread over ``zones``; a pre-empted replica is covered by an on-demand fallback, started
    at the notice and held until a spot replacement is ready. No reservation."""
    sp, od = pools.spot, pools.on_demand
    if sp is None:
        raise InvalidRequestError(
            "this provider sells no spot capacity; give a spot price", field="spot"
        )
    if overprovision < 0 or zones < 1:
        raise InvalidRequestError(
            f"overprovision={overprovision} must be >= 0 and zones={zones} >= 1",
            field="overprovision",
        )
    n = len(curve.replicas)
    spot = [d + overprovision if d else 0 for d in curve.replicas]
    # Holes last only until the on-demand fallback serves: its obtain delay past the notice.
    hole_h = max(0.0, od.obtain_delay_s - sp.notice_s) / 3600.0
    coverage = [
        poisson_cdf(s - d, s * sp.preemptions_per_hour * hole_h)
        for s, d in zip(spot, curve.replicas, strict=True)
    ]
    preemptions = sum(spot) * curve.step_h * sp.preemptions_per_hour
    fallback_h = preemptions * sp.obtain_delay_s / 3600.0
    plan = _Plan(0, [0] * n, spot, coverage, fallback_h)
    why = (
        f"spot follows the curve +{overprovision} spare across {zones} zones; "
        f"{preemptions:.1f} pre-emptions expected, each covered by an on-demand fallback "
        f"for {sp.obtain_delay_s:.0f} s; pre-emptions are taken as independent across zones"
    )
    return _price(curve, pools, plan, target, "spothedge", why)


def compare_procurement(
    curve: DemandCurve, pools: Pools, *, target: float = 0.99, overprovision: int = 2
) -> ProcurementComparison:
    """Every policy the pools allow, and the cheapest one that meets ``target`` coverage."""
    if not 0.0 < target <= 1.0:
        raise InvalidRequestError(
            f"coverage target {target} must be in (0, 1], e.g. 0.99", field="coverage"
        )
    outs = [all_on_demand(curve, pools, target=target)]
    if pools.reserved is not None:
        outs.append(peak_reserved(curve, pools, target=target))
    outs.append(reserved_mix(curve, pools, target=target))
    if pools.spot is not None:
        outs.append(spot_hedge(curve, pools, target=target, overprovision=overprovision))
    meeting = [o for o in outs if o.slo_met]
    best = min(meeting or outs, key=lambda o: (o.usd_total, o.policy))
    base = outs[0].usd_total
    saved = 1.0 - best.usd_total / base if base > 0 else 0.0
    why = (
        f"{best.policy} is the cheapest policy covering demand in >= {target:.1%} of steps: "
        f"${best.usd_per_week:,.0f}/week, {saved:.0%} below all on-demand"
    )
    if not meeting:
        why = f"no policy reaches {target:.1%} coverage; {best.policy} is cheapest regardless"
    return ProcurementComparison(tuple(outs), best.policy, target, why)
