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
    max_replicas: int | None = None  # most the pool can supply at once (None: no limit)

    def __post_init__(self) -> None:
        if self.usd_per_gpu_hour < 0 or self.obtain_delay_s < 0 or self.notice_s < 0:
            raise InvalidRequestError(
                f"{self.pool.value} pool: price, obtain delay and notice must be >= 0, got "
                f"{self.usd_per_gpu_hour}, {self.obtain_delay_s}, {self.notice_s}",
                field="pool",
            )
        if self.max_replicas is not None and self.max_replicas < 0:
            raise InvalidRequestError(
                f"{self.pool.value} pool: max_replicas={self.max_replicas} must be >= 0",
                field="max_replicas",
            )
        if self.preemptions_per_hour < 0:
            raise InvalidRequestError(
                f"{self.pool.value} pool: preemptions_per_hour={self.preemptions_per_hour} "
                "must be >= 0",
                field="preemptions_per_hour",
            )


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
    on_demand_per_step: tuple[int, ...] = ()  # replicas held in each step (excl. fallbacks)
    spot_per_step: tuple[int, ...] = ()


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


def cover_needed(mean_holes: float, target: float) -> int:
    """Fewest spare replicas so P(holes open at once <= spare) >= ``target`` (Poisson)."""
    k = 0
    while poisson_cdf(k, mean_holes) < target:
        k += 1
    return k


@dataclass(frozen=True, slots=True)
class SpotRisk:
    """What one pre-emption costs: the hole it leaves and the on-demand hours that bridge it."""

    hole_h: float  # capacity missing, from the end of the notice until a replacement serves
    fallback_h: float  # on-demand hours held per pre-emption (0: spot replaced by spot only)
    usd_per_gpu_hour: float  # spot price + expected replacement and fallback spend per hour
    preemptions_per_hour: float

    def mean_holes(self, spot_replicas: int) -> float:
        return spot_replicas * self.preemptions_per_hour * self.hole_h


def spot_risk(spot: PoolSpec, on_demand: PoolSpec, *, fallback: bool) -> SpotRisk:
    """With ``fallback`` an on-demand replica is requested at the notice and held until the
    spot replacement serves, so the hole is the faster of the two obtain delays past the
    notice; without, the hole is the spot replacement's own obtain delay past the notice."""
    od_bridges = fallback and on_demand.obtain_delay_s < spot.obtain_delay_s
    obtain_s = on_demand.obtain_delay_s if od_bridges else spot.obtain_delay_s
    fallback_h = spot.obtain_delay_s / 3600.0 if od_bridges else 0.0
    rate = spot.preemptions_per_hour
    per_hour = spot.usd_per_gpu_hour * (1.0 + rate * spot.obtain_delay_s / 3600.0)
    per_hour += rate * fallback_h * on_demand.usd_per_gpu_hour
    return SpotRisk(max(0.0, obtain_s - spot.notice_s) / 3600.0, fallback_h, per_hour, rate)


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
        on_demand_per_step=tuple(plan.on_demand),
        spot_per_step=tuple(plan.spot),
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


def _flex_costs(
    curve: DemandCurve, pools: Pools, risk: SpotRisk | None, target: float
) -> list[tuple[int, int, int]]:
    """For each excess e over the reserve, the cheapest (spot, on-demand, spare) that covers e
    replicas with probability >= ``target``: spares may be spot or on demand."""
    od_price = pools.on_demand.usd_per_gpu_hour
    best: list[tuple[int, int, int]] = [(0, e, 0) for e in range(curve.peak + 1)]
    if risk is None or pools.spot is None:
        return best
    cap = pools.spot.max_replicas
    top = 2 * (curve.peak + 1)
    k_max = cover_needed(risk.mean_holes(top), target)
    covers = [cover_needed(risk.mean_holes(s), target) for s in range(top + k_max + 1)]
    for e in range(curve.peak + 1):
        options = []
        for s in range((e + k_max if cap is None else min(e + k_max, cap)) + 1):
            o = max(0, e + covers[s] - s)
            options.append((s * risk.usd_per_gpu_hour + o * od_price, o, s))
        _, o, s = min(options)
        best[e] = (s, o, s + o - e)
    return best


def _mix_plan(
    curve: DemandCurve,
    reserved: int,
    flex: list[tuple[int, int, int]],
    risk: SpotRisk | None,
) -> _Plan:
    on_demand, spot, coverage = [], [], []
    for d in curve.replicas:
        s, o, spare = flex[max(0, d - reserved)]
        on_demand.append(o)
        spot.append(s)
        coverage.append(poisson_cdf(spare, risk.mean_holes(s)) if risk is not None else 1.0)
    fallback = risk.fallback_h * risk.preemptions_per_hour * sum(spot) * curve.step_h if risk else 0
    return _Plan(reserved, on_demand, spot, coverage, fallback)


def reserved_mix(curve: DemandCurve, pools: Pools, *, target: float) -> ProcurementOutcome:
    """A reserved baseline, then spot with on-demand cover for its holes, then on-demand.

    The baseline is the cheapest over every count from 0 to the peak; it lands near where the
    quantile rule says (the last reserved replica is needed more than
    price(reserved) / price(flexible) of the time), a little lower on a curve that wobbles,
    because a reserved replica also saves the obtain delay paid each time a flexible one is
    added.
    """
    sp = pools.spot
    risk = spot_risk(sp, pools.on_demand, fallback=True) if sp is not None else None
    flex = _flex_costs(curve, pools, risk, target)
    costs: list[tuple[float, int]] = []
    for r in range(curve.peak + 1 if pools.reserved is not None else 1):
        plan = _mix_plan(curve, r, flex, risk)
        costs.append((_price(curve, pools, plan, target, "", "").usd_total, r))
    _, r = min(costs)
    plan = _mix_plan(curve, r, flex, risk)
    busy = sum(1 for d in curve.replicas if d >= r) / len(curve.replicas) if r else 0.0
    od_price = pools.on_demand.usd_per_gpu_hour
    ratio = pools.reserved.usd_per_gpu_hour / od_price if pools.reserved is not None else 0.0
    parts = [
        f"reserve {r}, the cheapest count from 0 to the peak (the last of them is needed "
        f"{busy:.0%} of the time; reserved/on-demand price {ratio:.2f}; obtain delays saved "
        "count too)"
        if r
        else "reserve none (spot or on demand covers every replica for less than a reservation)"
    ]
    if risk is not None and any(plan.spot):
        steps = zip(plan.spot, plan.on_demand, curve.replicas, strict=True)
        spare = max(s + o - max(0, d - r) for s, o, d in steps)
        bridge = " bridged by on demand" if risk.fallback_h else ""
        od_part = f" and on demand up to {max(plan.on_demand)}" if any(plan.on_demand) else ""
        parts.append(
            f"spot up to {max(plan.spot)}{od_part} above it, "
            f"up to {spare} spare so each step is covered with probability >= {target:g} "
            f"({risk.preemptions_per_hour:g} pre-emptions/h per replica, each a "
            f"{risk.hole_h * 3600:.0f} s hole{bridge})"
        )
    else:
        parts.append("on demand above it (spot is not sold or costs more than it saves)")
    return _price(curve, pools, plan, target, "reserved+mix", "; ".join(parts))


def spot_hedge(
    curve: DemandCurve, pools: Pools, *, target: float, overprovision: int = 2
) -> ProcurementOutcome:
    """SpotHedge-style: spot for the whole curve plus ``overprovision`` spare spot replicas
    (SpotHedge spreads them over zones; here pre-emptions are independent, so a zone lost at
    once is not modelled); a pre-empted replica is bridged by an on-demand fallback requested
    at the notice and held until a spot replacement serves. No reservation."""
    sp, od = pools.spot, pools.on_demand
    if sp is None:
        raise InvalidRequestError(
            "this provider sells no spot capacity; give a spot price", field="spot"
        )
    if overprovision < 0:
        raise InvalidRequestError(
            f"overprovision={overprovision} must be >= 0 (spare spot replicas)",
            field="overprovision",
        )
    risk = spot_risk(sp, od, fallback=True)
    wanted = [d + overprovision if d else 0 for d in curve.replicas]
    cap = sp.max_replicas
    spot = [w if cap is None else min(w, cap) for w in wanted]
    # Spot the pool cannot supply is bought on demand (SpotHedge's fallback when spot is short).
    short = [w - s for w, s in zip(wanted, spot, strict=True)]
    coverage = [
        poisson_cdf(w - d, risk.mean_holes(s))
        for w, s, d in zip(wanted, spot, curve.replicas, strict=True)
    ]
    preemptions = sum(spot) * curve.step_h * sp.preemptions_per_hour
    plan = _Plan(0, short, spot, coverage, preemptions * risk.fallback_h)
    why = (
        f"spot follows the curve +{overprovision} spare"
        f"{'' if cap is None else f' (at most {cap} spot, the rest on demand)'}; "
        f"{preemptions:.1f} pre-emptions expected, each a {risk.hole_h * 3600:.0f} s hole "
        f"bridged by an on-demand fallback held {risk.fallback_h * 3600:.0f} s; pre-emptions "
        "are taken as independent (no zone lost at once)"
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
