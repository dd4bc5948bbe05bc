"""Recommender: ranked by $/M tokens, limits and filters respected, rows explain themselves."""

from __future__ import annotations

from shipit.capacity import SloTargets, TrafficProfile, load_catalog, recommend

CATALOG = load_catalog()
T = TrafficProfile(mean_rps=5, input_len_mean=1500, output_len_mean=300)
SLO = SloTargets(ttft_ms=2000, tpot_ms=50)


def test_rows_ranked_by_cost_with_reasons() -> None:
    res = recommend(CATALOG.model("llama-3.1-70b"), CATALOG, T, SLO)
    costs = [r.usd_per_million_tokens for r in res.rows]
    assert costs == sorted(costs) and len(costs) > 3
    assert all("-bound" in r.reason and "GPUs" in r.reason for r in res.rows)
    assert any("does not fit" in x or "cannot hold" in x for x in res.rejected)


def test_provider_filter_and_gpu_limit() -> None:
    res = recommend(
        CATALOG.model("llama-3.1-70b"), CATALOG, T, SLO, providers=("lambda",), max_gpus=4
    )
    assert res.rows and {r.provider for r in res.rows} == {"lambda"}
    assert all(r.gpus <= 4 for r in res.rows)


def test_native_dtype_is_considered() -> None:
    res = recommend(CATALOG.model("gpt-oss-120b"), CATALOG, T, SLO, dtypes=("bf16",))
    assert "mxfp4" in {r.dtype for r in res.rows}
