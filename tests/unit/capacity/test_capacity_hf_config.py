"""The one Hugging Face config.json parser: keys, defaults, spellings and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from shipit.capacity import model_from_hf_config
from shipit.core.errors import ModelLoadError

LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "_name_or_path": "meta-llama/Llama-3.2-1B",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008],
}


def test_every_key_lands_in_the_one_record() -> None:
    m = model_from_hf_config(LLAMA, source="/models/llama/config.json")
    assert (m.id, m.name, m.source) == (
        "llama-3.2-1b",
        "meta-llama/Llama-3.2-1B",
        "/models/llama/config.json",
    )
    assert (m.hidden_size, m.intermediate_size, m.num_layers) == (2048, 8192, 16)
    assert (m.num_heads, m.num_kv_heads, m.head_dim) == (32, 8, 64)
    assert (m.vocab_size, m.max_context, m.tie_word_embeddings) == (128256, 131072, True)
    assert (m.rope_theta, m.rms_norm_eps, m.rope_scaling) == (500000.0, 1e-6, None)
    assert (m.bos_token_id, m.eos_token_ids) == (128000, (128001, 128008))
    assert m.architecture == "LlamaForCausalLM" and not m.qkv_bias


def test_defaults_when_keys_are_absent() -> None:
    bare = {k: LLAMA[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    m = model_from_hf_config({**bare, "num_attention_heads": 16}, source="/x/tiny/config.json")
    assert m.id == "tiny"  # the directory name when the config names no model
    assert (m.num_kv_heads, m.head_dim, m.intermediate_size) == (16, 128, 4 * 2048)
    assert (m.max_context, m.rope_theta, m.rms_norm_eps) == (2048, 10000.0, 1e-5)
    assert (m.architecture, m.bos_token_id, m.eos_token_ids) == (None, None, ())


def test_qwen2_has_qkv_bias_unless_the_config_says_otherwise() -> None:
    qwen = {**LLAMA, "architectures": ["Qwen2ForCausalLM"]}
    assert model_from_hf_config(qwen).qkv_bias
    assert not model_from_hf_config({**qwen, "attention_bias": False}).qkv_bias
    assert model_from_hf_config({**LLAMA, "attention_bias": True}).qkv_bias


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"rope_type": "llama3", "factor": 8.0}, "llama3"),
        ({"type": "linear", "factor": 2.0}, "linear"),
        ({"rope_type": "default"}, None),
        (None, None),
        ({"factor": 2.0}, "{'factor': 2.0}"),
    ],
)
def test_rope_scaling_is_recorded_by_type(value: object, kind: str | None) -> None:
    assert model_from_hf_config({**LLAMA, "rope_scaling": value}).rope_scaling == kind


def test_multimodal_text_config_is_the_language_model() -> None:
    outer = {"architectures": ["LlavaForConditionalGeneration"], "text_config": LLAMA}
    m = model_from_hf_config(outer)
    assert (m.hidden_size, m.num_layers) == (2048, 16)


def test_missing_key_is_named() -> None:
    raw = {k: v for k, v in LLAMA.items() if k != "num_hidden_layers"}
    with pytest.raises(ModelLoadError, match="'num_hidden_layers' is missing") as info:
        model_from_hf_config(raw, source="c.json")
    assert info.value.field == "num_hidden_layers"


def test_an_unwanted_architecture_is_refused_before_keys_are_read() -> None:
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "n_embd": 768, "n_layer": 12}
    with pytest.raises(ModelLoadError, match=r"GPT2LMHeadModel.*LlamaForCausalLM") as info:
        model_from_hf_config(gpt2, architectures=("LlamaForCausalLM",))
    assert info.value.field == "architectures"
    with pytest.raises(ModelLoadError, match="'hidden_size' is missing"):
        model_from_hf_config(gpt2)  # the planner takes any architecture
