"""Procurement policies on a four-hour curve small enough to price by hand."""

from __future__ import annotations

import math

import pytest

from shipit.capacity.procurement import (
    DemandCurve,
    Pools,
    PoolSpec,
    all_on_demand,
    compare_procurement,
    cover_needed,
    peak_reserved,
    poisson_cdf,
    reserved_mix,
    spot_hedge,
    spot_risk,
)
from shipit.core.errors import InvalidRequestError
from shipit.core.fleet import CapacityPool as P

CURVE = DemandCurve(step_s=3600.0, replicas=(1, 1, 3, 1), tokens=2e6)
OD = PoolSpec(P.ON_DEMAND, 4.0)
RES = PoolSpec(P.RESERVED, 2.5)
SPOT_NO_HOLE = PoolSpec(P.SPOT, 1.6, preemptions_per_hour=0.1)


def test_all_on_demand_pays_replica_hours_and_obtain_delay_of_each_added_replica() -> None:
    o = all_on_demand(CURVE, Pools(OD), target=0.99)
    assert o.usd_total == pytest.approx(24.0)  # 6 replica-hours x $4
    assert o.usd_per_week == pytest.approx(24.0 * 42)  # 4 hours scaled to 168
    assert o.usd_per_million_tokens == pytest.approx(12.0)
    slow = Pools(PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800))
    # 1 replica at the start, 2 more at hour 3: 3 additions x 0.5 h x $4 on top.
    assert all_on_demand(CURVE, slow, target=0.99).usd_total == pytest.approx(30.0)


def test_peak_reserved_pays_the_peak_all_the_time() -> None:
    o = peak_reserved(CURVE, Pools(OD, reserved=RES), target=0.99)
    assert (o.reserved_replicas, o.usd_total, o.coverage) == (3, pytest.approx(30.0), 1.0)
    two_gpus = DemandCurve(step_s=3600.0, replicas=(1, 1, 3, 1), gpus_per_replica=2)
    assert peak_reserved(two_gpus, Pools(OD, reserved=RES), target=0.99).usd_total == 60.0


def test_reserved_baseline_is_the_cheapest_count() -> None:
    # r=0: $24, r=1: 4 h x $2.5 + 2 h x $4 = $18, r=2: $20 + $4 = $24, r=3: $30.
    o = reserved_mix(CURVE, Pools(OD, reserved=RES), target=0.99)
    assert (o.reserved_replicas, o.on_demand_replicas_peak) == (1, 2)
    assert o.usd_total == pytest.approx(18.0)
    assert "reserve 1" in o.reason and "100%" in o.reason


def test_spot_without_a_hole_takes_all_of_the_flexible_share() -> None:
    # Replacement ready at the notice: no hole, no cover; 6 h x $1.6 beats any reservation.
    o = reserved_mix(CURVE, Pools(OD, reserved=RES, spot=SPOT_NO_HOLE), target=0.99)
    assert (o.reserved_replicas, o.spot_replicas_peak, o.on_demand_replicas_peak) == (0, 3, 0)
    assert o.usd_total == pytest.approx(9.6)
    assert o.coverage == 1.0


def test_poisson_cover_for_spot_holes() -> None:
    assert poisson_cdf(0, 0.25) == pytest.approx(math.exp(-0.25))
    assert poisson_cdf(1, 0.5) == pytest.approx(0.909796, abs=1e-6)
    # Mean 0.25 holes: P(0) = 0.779 < 0.9, P(<=1) = 0.974: one spare.
    assert cover_needed(0.25, 0.9) == 1
    assert cover_needed(0.0, 0.9) == 0
    assert cover_needed(2.0, 0.9) == 4  # P(<=2) 0.677, P(<=3) 0.857, P(<=4) 0.947
    assert cover_needed(2.0, 0.85) == 3


def test_spot_risk_bridges_with_on_demand_only_when_it_is_faster() -> None:
    spot = PoolSpec(P.SPOT, 1.0, obtain_delay_s=3600, preemptions_per_hour=0.5, notice_s=600)
    fast_od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800)
    r = spot_risk(spot, fast_od, fallback=True)
    # Hole: on-demand's 1800 s less the 600 s notice; the bridge is held for spot's 1 h.
    # $1 + 0.5/h x 1 h replacement boot x $1 + 0.5/h x 1 h bridge x $4 = $3.5 per hour.
    assert (r.hole_h, r.fallback_h, r.usd_per_gpu_hour) == (pytest.approx(1 / 3), 1.0, 3.5)
    slow_od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=7200)
    r = spot_risk(spot, slow_od, fallback=True)
    assert (r.hole_h, r.fallback_h, r.usd_per_gpu_hour) == (pytest.approx(5 / 6), 0.0, 1.5)


def test_risky_spot_is_priced_with_its_spares() -> None:
    # Half-hour holes at 0.5/h (mean 0.25 per spot replica); a spot hour costs $1.25 with its
    # replacement's boot. Excess 2: 4 spot (2 spare, P(<=2 of Poisson(1)) 0.920) for $5 beats
    # 2 spot + 1 on demand ($6.5) and 2 on demand ($8); excess 1: 2 spot ($2.5).
    od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800)
    spot = PoolSpec(P.SPOT, 1.0, obtain_delay_s=1800, preemptions_per_hour=0.5)
    o = reserved_mix(DemandCurve(step_s=3600.0, replicas=(2, 1)), Pools(od, spot=spot), target=0.9)
    assert (o.spot_replicas_peak, o.on_demand_replicas_peak) == (4, 0)
    assert o.coverage == pytest.approx((poisson_cdf(2, 1.0) + poisson_cdf(1, 0.5)) / 2)
    assert o.coverage == pytest.approx(0.91475, abs=1e-4) and o.slo_met
    # 6 spot-hours + (4 started + 3 pre-emptions replaced) x 0.5 h boot, at $1.
    assert o.usd_total == pytest.approx(9.5)


def test_spot_hedge_overprovisions_and_pays_fallbacks() -> None:
    od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800)
    spot = PoolSpec(P.SPOT, 1.6, obtain_delay_s=3600, preemptions_per_hour=0.1)
    o = spot_hedge(CURVE, Pools(od, spot=spot), target=0.99, overprovision=1)
    # spot (2,2,4,2) = 10 h, +4 added and +1 pre-emption replaced at 1 h each: 15 h x $1.6;
    # one fallback on demand held 1 h: $4.
    assert o.spot_replicas_peak == 4 and o.usd_total == pytest.approx(28.0)
    # Holes last 0.5 h (fallback's obtain delay): P(<=1 of Poisson(0.1)) three steps,
    # P(<=1 of Poisson(0.2)) at the peak.
    expected = (3 * math.exp(-0.1) * 1.1 + math.exp(-0.2) * 1.2) / 4
    assert o.coverage == pytest.approx(expected) and o.coverage == pytest.approx(0.99211, 1e-4)
    assert o.slo_met
    bare = spot_hedge(CURVE, Pools(od, spot=spot), target=0.99, overprovision=0)
    assert bare.coverage < 0.99 and not bare.slo_met


def test_comparison_recommends_the_cheapest_policy_that_meets_the_target() -> None:
    od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800)
    spot = PoolSpec(P.SPOT, 0.5, obtain_delay_s=3600, preemptions_per_hour=0.1)
    c = compare_procurement(CURVE, Pools(od, reserved=RES, spot=spot), target=0.99, overprovision=0)
    by = {o.policy: o for o in c.outcomes}
    assert set(by) == {"all-on-demand", "peak-reserved", "reserved+mix", "spothedge"}
    assert not by["spothedge"].slo_met  # cheap, but no spare: holes uncovered
    met = [o for o in c.outcomes if o.slo_met]
    assert c.recommended == min(met, key=lambda o: o.usd_total).policy
    assert c.recommended != "spothedge"


def test_bad_input_says_what_to_do() -> None:
    with pytest.raises(InvalidRequestError, match="non-negative"):
        DemandCurve(step_s=3600.0, replicas=())
    with pytest.raises(InvalidRequestError, match="preemptions_per_hour"):
        PoolSpec(P.SPOT, 1.0, preemptions_per_hour=-1)
    with pytest.raises(InvalidRequestError, match="no spot"):
        spot_hedge(CURVE, Pools(OD), target=0.99)
    with pytest.raises(InvalidRequestError, match="coverage target"):
        compare_procurement(CURVE, Pools(OD), target=1.5)


def test_rates_from_timestamps_and_repeat_to_days() -> None:
    from shipit.capacity.procurement_demand import rates_from_timestamps, repeat_to_days

    # Span 11 s in 5 s buckets: two full buckets; arrivals at 10 and 11 fall in a partial one.
    assert rates_from_timestamps([0, 1, 2, 6, 10, 11], bucket_s=5) == (0.6, 0.2)
    assert repeat_to_days((1.0, 2.0, 3.0), step_s=28800, days=2) == (1, 2, 3, 1, 2, 3)
    with pytest.raises(InvalidRequestError, match="days"):
        repeat_to_days((1.0,), step_s=3600, days=0)


def test_demand_curve_sizes_each_step_like_plan_replicas() -> None:
    from shipit.capacity import (
        Deployment,
        SloTargets,
        TrafficProfile,
        load_catalog,
        size_replicas,
    )
    from shipit.capacity.procurement_demand import demand_curve

    cat = load_catalog()
    d = Deployment(model=cat.model("llama-3.1-8b"), gpu=cat.gpu("h100-sxm"), max_model_len=4096)
    t = TrafficProfile(mean_rps=10, input_len_mean=1000, output_len_mean=200)
    slo = SloTargets(ttft_ms=800, tpot_ms=40, percentile=99)
    c = demand_curve(d, t, slo, (0.0, 5.0, 40.0, 5.0), step_s=900)
    peak = TrafficProfile(mean_rps=40, input_len_mean=1000, output_len_mean=200)
    assert c.replicas[0] == 0 and c.replicas[1] == c.replicas[3] < c.replicas[2]
    assert c.replicas[2] == size_replicas(d, peak, slo).replicas_peak
    assert c.tokens == pytest.approx(50 * 900 * 1200)


def test_short_spot_supply_falls_back_to_on_demand() -> None:
    od = PoolSpec(P.ON_DEMAND, 4.0)
    spot = PoolSpec(P.SPOT, 1.6, preemptions_per_hour=0.1, max_replicas=2)
    # SpotHedge wants demand + 1; the pool gives at most 2: peak step 2 spot + 2 on demand.
    o = spot_hedge(CURVE, Pools(od, spot=spot), target=0.99, overprovision=1)
    assert (o.spot_replicas_peak, o.on_demand_replicas_peak) == (2, 2)
    # spot (2,2,2,2) 8 h x $1.6 + on demand (0,0,2,0) 2 h x $4 (no obtain delays, no holes).
    assert o.usd_total == pytest.approx(20.8)
    # The mix: excess 3 at the peak: 2 spot + 1 on demand; otherwise 1 spot: 5 h x $1.6 + $4.
    m = reserved_mix(CURVE, Pools(od, spot=spot), target=0.99)
    assert (m.spot_replicas_peak, m.on_demand_replicas_peak) == (2, 1)
    assert m.usd_total == pytest.approx(12.0)


def test_the_mix_holds_every_step_at_the_target() -> None:
    od = PoolSpec(P.ON_DEMAND, 4.0, obtain_delay_s=1800)
    spot = PoolSpec(P.SPOT, 0.5, obtain_delay_s=3600, preemptions_per_hour=0.3, notice_s=60)
    curve = DemandCurve(step_s=900.0, replicas=(0, 3, 9, 20, 14, 6, 2, 11))
    o = reserved_mix(curve, Pools(od, spot=spot), target=0.995)
    risk = spot_risk(spot, od, fallback=True)
    steps = zip(curve.replicas, o.spot_per_step, o.on_demand_per_step, strict=True)
    spares = []
    for d, s, n in steps:
        spares.append(o.reserved_replicas + s + n - d)
        assert poisson_cdf(spares[-1], risk.mean_holes(s)) >= 0.995
    # Spot at the busy steps needs spares (the check above is not vacuous).
    assert min(spares) >= 0 and max(spares) >= 2
    assert o.coverage >= 0.995 and any(o.spot_per_step)
