"""VRAM plan: the budget adds up, activation grows with batched tokens, misfits say what to do."""

from __future__ import annotations

import dataclasses

import pytest

from shipit.capacity import Deployment, activation_peak_bytes, load_catalog, plan_vram
from shipit.core.errors import InvalidRequestError

CATALOG = load_catalog()


def _d(model: str = "llama-3.1-8b", gpu: str = "h100-sxm", **kw: object) -> Deployment:
    return Deployment(model=CATALOG.model(model), gpu=CATALOG.gpu(gpu), **kw)  # type: ignore[arg-type]


def test_budget_adds_up() -> None:
    p = plan_vram(_d(max_model_len=8192))
    parts = (
        p.weight_bytes
        + p.activation_peak_bytes
        + p.non_torch_bytes
        + p.cuda_graph_bytes
        + p.kv_pool_bytes
    )
    assert parts == pytest.approx(p.budget_bytes)
    assert p.fits and p.kv_bytes_per_token_total == 131_072
    assert p.max_concurrent_seqs == p.kv_pool_bytes // (8192 * 131_072)


def test_activation_peak_is_a_function_of_batched_tokens() -> None:
    m = CATALOG.model("llama-3.1-8b")
    small = activation_peak_bytes(m, tp=1, max_num_batched_tokens=2048, max_num_seqs=256)
    big = activation_peak_bytes(m, tp=1, max_num_batched_tokens=16384, max_num_seqs=256)
    assert big > 4 * small / 2 and big > small
    a = plan_vram(_d(max_model_len=8192, max_num_batched_tokens=2048))
    b = plan_vram(_d(max_model_len=8192, max_num_batched_tokens=32768))
    assert b.kv_pool_bytes < a.kv_pool_bytes


def test_fp8_kv_doubles_the_sequences_held() -> None:
    a = plan_vram(_d(max_model_len=32768, max_num_seqs=4096))
    b = plan_vram(_d(max_model_len=32768, max_num_seqs=4096, kv_dtype="fp8"))
    assert b.max_concurrent_seqs in (2 * a.max_concurrent_seqs, 2 * a.max_concurrent_seqs + 1)


def test_tensor_parallel_splits_weights() -> None:
    one = plan_vram(_d("llama-3.1-70b", "h200", max_model_len=8192))
    four = plan_vram(_d("llama-3.1-70b", "h200", tp=4, max_model_len=8192))
    assert four.weight_bytes == pytest.approx(one.weight_bytes / 4)
    assert four.max_concurrent_seqs > one.max_concurrent_seqs


def test_misfit_says_what_to_change() -> None:
    p = plan_vram(_d("llama-3.1-70b", "a100-40gb", max_model_len=8192), other_gpus=CATALOG.gpus)
    assert not p.fits and "does not fit" in p.reason
    assert any(s.startswith("--tp ") for s in p.suggestions)
    assert any(s.startswith("--gpu ") for s in p.suggestions)


def test_fp8_kv_suggested_where_it_is_enough() -> None:
    p = plan_vram(_d("llama-3.1-70b", "h100-sxm", tp=2, max_model_len=32768))
    assert not p.fits
    assert "--kv-dtype fp8 (halves KV bytes per token)" in p.suggestions
    assert plan_vram(
        _d("llama-3.1-70b", "h100-sxm", tp=2, max_model_len=32768, kv_dtype="fp8")
    ).fits


def test_long_context_misfit_suggests_a_context_that_fits() -> None:
    p = plan_vram(_d("llama-3.1-8b", "l4"))  # 128k context on 24 GiB
    assert not p.fits
    assert any(s.startswith("--max-model-len") for s in p.suggestions)
    for s in p.suggestions:  # every suggestion was checked by re-planning
        if s.startswith("--max-model-len"):
            tokens = int(s.split()[1])
            assert plan_vram(_d("llama-3.1-8b", "l4", max_model_len=tokens)).fits


def test_invalid_tp_names_valid_degrees() -> None:
    with pytest.raises(InvalidRequestError, match="use one of 1, 2, 4") as err:
        _d("qwen2.5-7b", tp=8)  # 28 heads
    assert err.value.field == "tp"


def test_bad_memory_utilisation_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="gpu_memory_utilization"):
        _d(gpu_memory_utilization=1.5)


def test_unknown_dtype_lists_known() -> None:
    with pytest.raises(InvalidRequestError, match="int4-awq"):
        _d(dtype="int3")
    with pytest.raises(InvalidRequestError, match="KV-cache"):
        dataclasses.replace(_d(), kv_dtype="int2")
