"""Dollars: cost per million input and output tokens, and the reserved / on-demand / spot mix.

Token cost splits a replica's time between prefill (charged to input tokens) and decode
(charged to output tokens) at the operating point ``perf`` describes, divided by utilisation.
The procurement mix picks the reserved GPU count that minimises the cost of a daily demand
curve: reserving one more GPU pays off when demand exceeds it for more than the reserved/on-demand
price ratio of the day. Dollars per million tokens come from ``pricing``. Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.capacity.perf import PerfEstimate
from shipit.capacity.pricing import usd_per_million_tokens
from shipit.core.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class TokenCost:
    usd_per_replica_hour: float
    usd_per_million_input_tokens: float
    usd_per_million_output_tokens: float
    usd_per_million_tokens_blended: float
    utilization: float
    reason: str


def token_cost(
    perf: PerfEstimate, *, usd_per_gpu_hour: float, utilization: float = 1.0
) -> TokenCost:
    """Dollars per million tokens for a replica busy ``utilization`` of the time at ``perf``."""
    if not 0.0 < utilization <= 1.0:
        raise InvalidRequestError(
            f"utilization={utilization} must be in (0, 1]", field="utilization"
        )
    per_hour = usd_per_gpu_hour * perf.tp
    busy_per_hour = per_hour / utilization  # idle time is paid for by the tokens served
    replica_s_per_request = 1.0 / perf.requests_per_s
    prefill_s = min(perf.prefill_ms_per_request / 1e3, replica_s_per_request)
    prefill_share = prefill_s / replica_s_per_request
    rps = perf.requests_per_s
    inp = usd_per_million_tokens(busy_per_hour * prefill_share, rps * perf.input_len)
    out = usd_per_million_tokens(busy_per_hour * (1.0 - prefill_share), rps * perf.output_len)
    blended = usd_per_million_tokens(busy_per_hour, rps * (perf.input_len + perf.output_len))
    why = (
        f"${per_hour:.2f}/h for {perf.tp} GPU(s) at {utilization:.0%} utilisation; "
        f"{perf.requests_per_s:.2f} req/s of {perf.input_len}/{perf.output_len} tokens; "
        f"prefill {prefill_share:.0%} of replica time goes to input tokens"
    )
    return TokenCost(per_hour, inp, out, blended, utilization, why)


@dataclass(frozen=True, slots=True)
class ProcurementPlan:
    reserved_gpus: int
    on_demand_gpu_hours_per_day: float
    spot_gpu_hours_per_day: float
    usd_per_day: float
    usd_per_day_all_on_demand: float
    savings_fraction: float
    reason: str


def procurement_mix(
    hourly_demand_gpus: tuple[float, ...],
    *,
    usd_per_gpu_hour: float,
    reserved_discount: float | None,
    spot_discount: float | None,
    spot_fraction: float = 0.0,
) -> ProcurementPlan:
    """Reserved GPUs for the base, on-demand (and optionally spot) for the rest of a 24 h curve.

    ``spot_fraction`` of the above-reserve GPU-hours go to spot (interruptible: keep it for
    headroom or batch work, not for capacity the SLO depends on).
    """
    if len(hourly_demand_gpus) != 24 or min(hourly_demand_gpus) < 0:
        raise InvalidRequestError(
            "hourly demand needs 24 non-negative values (GPUs needed each hour)", field="demand"
        )
    if not 0.0 <= spot_fraction <= 1.0:
        raise InvalidRequestError("spot_fraction must be in [0, 1]", field="spot_fraction")
    res_price = usd_per_gpu_hour * (1.0 - (reserved_discount or 0.0))
    spot = spot_fraction if spot_discount is not None else 0.0
    flex_price = usd_per_gpu_hour * (1.0 - spot * (spot_discount or 0.0))

    def cost(r: int) -> float:
        over = sum(max(0.0, h - r) for h in hourly_demand_gpus)
        return r * 24 * res_price + over * flex_price

    top = math.ceil(max(hourly_demand_gpus))
    candidates = range(top + 1) if reserved_discount is not None else range(1)
    best = min(candidates, key=lambda r: (cost(r), r))
    over = sum(max(0.0, h - best) for h in hourly_demand_gpus)
    all_od = sum(hourly_demand_gpus) * usd_per_gpu_hour
    total = cost(best)
    why = (
        f"reserve {best} GPU(s) (busy most of the day; ${res_price:.2f}/h), the remaining "
        f"{over:.0f} GPU-h/day at ${flex_price:.2f}/h blended on-demand/spot; "
        f"all on-demand would cost ${all_od:,.0f}/day"
    )
    if spot_discount is None and spot_fraction > 0:
        why += "; this provider sells no spot capacity"
    return ProcurementPlan(
        reserved_gpus=best,
        on_demand_gpu_hours_per_day=over * (1.0 - spot),
        spot_gpu_hours_per_day=over * spot,
        usd_per_day=total,
        usd_per_day_all_on_demand=all_od,
        savings_fraction=(1.0 - total / all_od) if all_od > 0 else 0.0,
        reason=why,
    )
