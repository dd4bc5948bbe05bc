"""Cost per token and the procurement mix."""

from __future__ import annotations

import pytest

from shipit.capacity import (
    Deployment,
    estimate_perf,
    load_catalog,
    procurement_mix,
    token_cost,
)
from shipit.core.errors import InvalidRequestError

CATALOG = load_catalog()
D = Deployment(model=CATALOG.model("llama-3.1-8b"), gpu=CATALOG.gpu("h100-sxm"), max_model_len=4096)


def test_token_cost_adds_up_to_replica_hour() -> None:
    e = estimate_perf(D, input_len=1000, output_len=200, concurrency=32)
    c = token_cost(e, usd_per_gpu_hour=3.0, utilization=1.0)
    per_hour_tokens_in = e.input_tokens_per_s * 3600
    per_hour_tokens_out = e.output_tokens_per_s * 3600
    spent = (
        c.usd_per_million_input_tokens * per_hour_tokens_in
        + c.usd_per_million_output_tokens * per_hour_tokens_out
    ) / 1e6
    assert spent == pytest.approx(3.0)


def test_lower_utilisation_costs_more_and_fp8_costs_less() -> None:
    e = estimate_perf(D, input_len=1000, output_len=200, concurrency=64)
    full = token_cost(e, usd_per_gpu_hour=3.0, utilization=1.0)
    half = token_cost(e, usd_per_gpu_hour=3.0, utilization=0.5)
    assert half.usd_per_million_tokens_blended == pytest.approx(
        2 * full.usd_per_million_tokens_blended
    )
    f8 = Deployment(model=D.model, gpu=D.gpu, dtype="fp8", max_model_len=4096)
    e8 = estimate_perf(f8, input_len=1000, output_len=200, concurrency=64)
    assert token_cost(e8, usd_per_gpu_hour=3.0).usd_per_million_tokens_blended < (
        full.usd_per_million_tokens_blended
    )


def test_flat_demand_is_all_reserved() -> None:
    p = procurement_mix(
        (10.0,) * 24, usd_per_gpu_hour=4.0, reserved_discount=0.37, spot_discount=0.6
    )
    assert p.reserved_gpus == 10 and p.on_demand_gpu_hours_per_day == 0
    assert p.savings_fraction == pytest.approx(0.37)


def test_short_peak_stays_on_demand() -> None:
    demand = (2.0,) * 22 + (20.0,) * 2
    p = procurement_mix(
        demand, usd_per_gpu_hour=4.0, reserved_discount=0.37, spot_discount=0.6, spot_fraction=0.5
    )
    assert p.reserved_gpus == 2
    assert p.spot_gpu_hours_per_day == pytest.approx(18.0)
    assert p.usd_per_day < p.usd_per_day_all_on_demand


def test_procurement_validation() -> None:
    with pytest.raises(InvalidRequestError, match="24"):
        procurement_mix(
            (1.0,) * 23, usd_per_gpu_hour=1.0, reserved_discount=None, spot_discount=None
        )
