"""Catalog data: ids, aliases, sources and dates, close matches, local config.json models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shipit.capacity import GpuSpec, ModelSpec, PriceQuote, load_catalog
from shipit.core.errors import InvalidRequestError, ModelLoadError
from shipit.engine.model_files import resolve_model

CATALOG = load_catalog()
REQUIRED_MODELS = (
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "qwen2.5-7b",
    "qwen2.5-72b",
    "qwen3-32b",
    "qwen3-235b-a22b",
    "llama-3.3-70b",
    "mistral-7b",
    "mixtral-8x7b",
    "deepseek-v3",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "gemma-3-27b",
    "smollm2-135m",
)
ID = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


def test_required_models_present() -> None:
    ids = {m.id for m in CATALOG.models}
    assert set(REQUIRED_MODELS) <= ids


def test_ids_are_lowercase_hyphenated_and_unique() -> None:
    ids = [m.id for m in CATALOG.models] + [g.id for g in CATALOG.gpus]
    assert len(ids) == len(set(ids))
    assert all(ID.match(i) for i in ids), ids


def test_every_entry_has_source_and_date() -> None:
    entries: list[ModelSpec | GpuSpec | PriceQuote] = [*CATALOG.models, *CATALOG.gpus]
    for entry in [*entries, *CATALOG.prices]:
        assert entry.source.strip()
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", entry.as_of)


def test_prices_name_known_gpus_and_providers() -> None:
    gpus = {g.id for g in CATALOG.gpus}
    providers = {p.id for p in CATALOG.providers}
    for q in CATALOG.prices:
        assert q.gpu in gpus and q.provider in providers and q.usd_per_gpu_hour > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("H100", "h100-sxm"),
        ("h100-sxm", "h100-sxm"),
        ("A100", "a100-80gb"),
        ("A100-40GB", "a100-40gb"),
        ("MI300X", "mi300x"),
    ],
)
def test_gpu_aliases_case_insensitive(name: str, expected: str) -> None:
    assert CATALOG.gpu(name).id == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("LLAMA-3.3-70B", "llama-3.3-70b"),
        ("Qwen/Qwen3-235B-A22B", "qwen3-235b-a22b"),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
    ],
)
def test_model_aliases_case_insensitive(name: str, expected: str) -> None:
    assert CATALOG.model(name).id == expected


def test_unknown_gpu_names_value_close_matches_and_valid_ids() -> None:
    with pytest.raises(InvalidRequestError) as err:
        CATALOG.gpu("h10")
    msg = err.value.message
    assert "'h10'" in msg and "h100-sxm" in msg and "l40s" in msg
    assert err.value.field == "gpu"


def test_unknown_model_suggests_close_match() -> None:
    with pytest.raises(InvalidRequestError, match=r"did you mean llama-3\.1-8b"):
        CATALOG.model("llama-3.1-8")


def test_local_hf_config_is_a_model(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    by_file = resolve_model(CATALOG, str(tmp_path / "config.json"))
    by_dir = resolve_model(CATALOG, str(tmp_path))
    assert by_file.num_kv_heads == 8 and by_dir.hidden_size == 4096
    assert by_file.id == resolve_model(CATALOG, str(tmp_path)).id


def test_local_config_missing_key_names_it(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelLoadError, match="num_attention_heads"):
        resolve_model(CATALOG, str(tmp_path / "config.json"))


def test_local_mla_moe_config(tmp_path: Path) -> None:
    cfg = {
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "vocab_size": 129280,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "q_lora_rank": 1536,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 2048,
        "n_shared_experts": 1,
        "first_k_dense_replace": 3,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = resolve_model(CATALOG, str(tmp_path))
    assert m.mla is not None and m.moe is not None and m.moe.first_dense_layers == 3


def test_unknown_provider_lists_known() -> None:
    with pytest.raises(InvalidRequestError, match="lambda"):
        CATALOG.prices_for("h100-sxm", ("azure",))
