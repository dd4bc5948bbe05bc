"""Known values: KV bytes per token, parameter counts, weight bytes per precision."""

from __future__ import annotations

import pytest

from shipit.capacity import (
    kv_bytes_for_context,
    kv_bytes_per_token,
    load_catalog,
    param_counts,
    total_params,
    weight_bytes,
    weight_dtype,
)

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llama-3-8b", 131_072),
        ("llama-3-70b", 327_680),
        ("deepseek-v3", 70_272),
        ("llama-3.1-8b", 131_072),
        ("qwen2.5-7b", 57_344),
        ("smollm2-135m", 23_040),
    ],
)
def test_kv_bytes_per_token_bf16(model: str, expected: int) -> None:
    assert kv_bytes_per_token(CATALOG.model(model), 2.0) == expected


def test_kv_heads_split_under_tp_and_replicated_beyond_kv_heads() -> None:
    m = CATALOG.model("llama-3.1-70b")  # 8 KV heads
    assert kv_bytes_per_token(m, 2.0, tp=8) == 327_680 / 8
    q = CATALOG.model("qwen2.5-7b")  # 4 KV heads: at tp=8 each rank still holds one
    assert kv_bytes_per_token(q, 2.0, tp=8) == kv_bytes_per_token(q, 2.0, tp=4)


def test_mla_latent_is_not_split_by_tp() -> None:
    m = CATALOG.model("deepseek-v3")
    assert kv_bytes_per_token(m, 2.0, tp=8) == 70_272


def test_fp8_kv_halves_bytes() -> None:
    m = CATALOG.model("llama-3.1-8b")
    assert kv_bytes_per_token(m, 1.0) == 65_536


def test_sliding_window_layers_hold_only_the_window() -> None:
    m = CATALOG.model("gemma-3-27b")
    full = kv_bytes_per_token(m, 2.0) * 32_768
    assert kv_bytes_for_context(m, 2.0, 32_768) < 0.3 * full
    assert kv_bytes_for_context(m, 2.0, 512) == kv_bytes_per_token(m, 2.0) * 512


@pytest.mark.parametrize("model", [m.id for m in CATALOG.models])
def test_architecture_reproduces_published_parameter_count(model: str) -> None:
    m = CATALOG.model(model)
    assert m.params_published is not None
    assert total_params(m) == pytest.approx(m.params_published, rel=0.02)


@pytest.mark.parametrize("model", [m.id for m in CATALOG.models])
def test_bf16_weight_bytes_within_2_percent_of_params_times_two(model: str) -> None:
    m = CATALOG.model(model)
    assert m.params_published is not None
    assert weight_bytes(m, weight_dtype("bf16")) == pytest.approx(2 * m.params_published, rel=0.02)


@pytest.mark.parametrize(
    "model", ["llama-3.1-405b", "deepseek-v3", "qwen3-235b-a22b", "mixtral-8x7b"]
)
def test_fp8_weight_bytes_within_2_percent_of_params_for_large_models(model: str) -> None:
    # Embeddings and the LM head stay 16-bit (vLLM), a small share of a large model.
    m = CATALOG.model(model)
    assert m.params_published is not None
    assert weight_bytes(m, weight_dtype("fp8")) == pytest.approx(m.params_published, rel=0.02)


def test_quantised_formats_keep_embeddings_16_bit() -> None:
    m = CATALOG.model("llama-3.1-8b")
    c = param_counts(m)
    linear = c.attention + c.dense_mlp
    expected = linear * 1.0 + (c.embedding + c.lm_head + c.other) * 2.0
    assert weight_bytes(m, weight_dtype("fp8")) == pytest.approx(expected)
    assert weight_bytes(m, weight_dtype("int4-awq")) < weight_bytes(m, weight_dtype("fp8"))


def test_moe_active_parameters() -> None:
    assert param_counts(CATALOG.model("deepseek-v3")).active_matmul == pytest.approx(37e9, rel=0.03)
    assert param_counts(CATALOG.model("mixtral-8x7b")).active_matmul == pytest.approx(
        12.9e9, rel=0.03
    )
    assert param_counts(CATALOG.model("qwen3-235b-a22b")).active_matmul == pytest.approx(
        22e9, rel=0.03
    )


def test_gpt_oss_native_mxfp4_matches_published_checkpoint_size() -> None:
    gib = 1024**3
    m = CATALOG.model("gpt-oss-20b")
    assert weight_bytes(m, weight_dtype(m.native_dtype)) / gib == pytest.approx(12.8, rel=0.02)
