"""The engine's view of the one model record: same numbers as the planner, and refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shipit.capacity import kv_bytes_per_token, load_catalog
from shipit.capacity.records import MoeSpec
from shipit.core.errors import ModelLoadError
from shipit.engine.loader import load_model
from shipit.engine.model_config import ModelConfig
from shipit.engine.model_files import resolve_model
from support.tiny_model import write_tiny_hf_model

CATALOG = load_catalog()


def test_the_engine_and_the_planner_read_one_config_json_the_same(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "tiny", attention_bias=True, heads=4, kv_heads=2)
    engine = load_model(str(model_dir)).config
    planner = resolve_model(CATALOG, str(model_dir))
    assert engine == ModelConfig.from_spec(planner)
    assert (engine.num_layers, engine.num_kv_heads, engine.head_dim) == (
        planner.num_layers,
        planner.num_kv_heads,
        planner.head_dim,
    )
    assert engine.attention_bias and planner.qkv_bias
    # The engine keeps float32 K and V: the planner's per-token KV bytes at 4 bytes each.
    assert engine.kv_bytes_per_token == kv_bytes_per_token(planner, 4.0)


def test_a_catalog_model_has_an_engine_view() -> None:
    spec = CATALOG.model("llama-3.1-8b")
    view = ModelConfig.from_spec(spec)
    assert (view.hidden_size, view.num_layers, view.max_position_embeddings) == (4096, 32, 131072)
    assert view.architecture == "LlamaForCausalLM"  # the catalog does not say; Llama assumed


@pytest.mark.parametrize(
    ("change", "needle", "field"),
    [
        ({"rope_scaling": "llama3"}, "rope_scaling 'llama3' is not supported", "rope_scaling"),
        ({"architecture": "GPT2LMHeadModel"}, "GPT2LMHeadModel", "architectures"),
        ({"moe": MoeSpec(8, 2, 1024)}, "mixture-of-experts", "architectures"),
    ],
)
def test_what_the_engine_cannot_run_is_refused(
    change: dict[str, object], needle: str, field: str
) -> None:
    spec = dataclasses.replace(CATALOG.model("llama-3.2-1b"), **change)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match=needle) as info:
        ModelConfig.from_spec(spec)
    assert info.value.field == field


def test_from_hf_dict_refuses_other_architectures_before_reading_keys() -> None:
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel") as info:
        ModelConfig.from_hf_dict({"architectures": ["GPT2LMHeadModel"], "n_embd": 768})
    assert info.value.field == "architectures"
