"""The planner's questions as typed inputs (``capacity.queries``): defaults and checks shared by
``shipit plan`` and the console, the stacked bar's parts, and the refusal messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipit import capacity as cap

REC = {"input_len": 1000, "output_len": 200, "ttft_p99_ms": 2000, "tpot_p99_ms": 50}


def test_a_rate_is_given_once_as_requests_or_output_tokens() -> None:
    assert cap.RecommendQuery(rps=5, **REC).mean_rps == 5
    assert cap.RecommendQuery(throughput=1000, **REC).mean_rps == 5  # 1000 tok/s / 200 tok
    for both_or_none in ({"rps": 5, "throughput": 1000}, {}):
        with pytest.raises(ValidationError) as err:
            cap.RecommendQuery(**both_or_none, **REC)
        assert cap.explain_invalid(err.value).message == (
            "give exactly one of rps (requests/s) or throughput (output tokens/s)"
        )


def test_refusals_name_the_field_and_the_value() -> None:
    with pytest.raises(ValidationError) as err:
        cap.VramQuery(gpu="h100", tp=0)
    refusal = cap.explain_invalid(err.value)
    assert refusal.field == "tp"
    assert refusal.message == "tp: Input should be greater than or equal to 1 (got 0)"
    with pytest.raises(ValidationError) as err:
        cap.VramQuery.model_validate({"gpu": "h100", "tensor_parallel": 2})
    assert cap.explain_invalid(err.value).message == (
        "tensor_parallel: unknown field; check its spelling"
    )


@pytest.mark.parametrize(
    ("model", "gpu", "fits"),
    [("llama-3.1-8b", "h100", True), ("llama-3.1-70b", "l4", False)],
)
def test_segments_split_the_whole_gpu(model: str, gpu: str, fits: bool) -> None:
    catalog = cap.load_catalog()
    _, plan = cap.answer_vram(catalog, catalog.model(model), cap.VramQuery(gpu=gpu))
    assert plan.fits is fits
    parts = {s.name: s.bytes for s in cap.vram_segments(plan)}
    assert list(parts) == ["weights", "activations", "overhead", "kv_cache", "free"]
    assert parts["overhead"] == plan.non_torch_bytes + plan.cuda_graph_bytes
    if fits:  # the KV pool fills the budget: the parts are the whole GPU
        assert sum(parts.values()) == pytest.approx(plan.gpu_total_bytes)
        assert parts["free"] == pytest.approx(plan.gpu_total_bytes - plan.budget_bytes)
    else:  # 70B of bf16 weights overrun a 24 GiB L4: no pool, nothing free
        assert parts["kv_cache"] == 0 and parts["free"] == 0


def test_a_dollar_budget_drops_what_costs_more() -> None:
    catalog = cap.load_catalog()
    model = catalog.model("llama-3.1-8b")
    free = cap.answer_recommend(catalog, model, cap.RecommendQuery(rps=5, **REC))
    capped = cap.answer_recommend(
        catalog, model, cap.RecommendQuery(rps=5, max_usd_per_hour=1.5, **REC)
    )
    assert capped.rows == tuple(r for r in free.rows if r.usd_per_hour <= 1.5)
    assert len(capped.rows) < len(free.rows)
    assert any("$1.50/h budget" in why for why in capped.rejected)
