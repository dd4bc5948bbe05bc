"""LoRA adapter files: reading PEFT directories and validating them against the base model."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipit.core.errors import ModelLoadError, UnsafeCheckpointError
from shipit.engine.lora_files import LORA_MODULES, load_lora_adapter, lora_module_features
from shipit.engine.model_config import ModelConfig
from support.tiny_lora import DISTINCT_DIMS as CONFIG
from support.tiny_lora import (
    base_key,
    lora_key,
    merge_lora,
    write_safetensors,
    write_tiny_lora,
)


def _adapter_dir(tmp_path: Path, name: str = "a", **kwargs: Any) -> Path:
    return write_tiny_lora(tmp_path / name, CONFIG, **kwargs)


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "features"),
    [
        ("q_proj", (16, 24)),
        ("k_proj", (16, 12)),
        ("v_proj", (16, 12)),
        ("o_proj", (24, 16)),
        ("gate_proj", (16, 40)),
        ("up_proj", (16, 40)),
        ("down_proj", (40, 16)),
    ],
)
def test_module_features(module: str, features: tuple[int, int]) -> None:
    assert lora_module_features(CONFIG, module) == features


def test_load_reads_every_module_with_checked_shapes(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path, rank=4, alpha=8)
    adapter = load_lora_adapter("tiny", path, CONFIG)
    assert adapter.name == "tiny"
    assert adapter.path == str(path.resolve())
    assert adapter.rank == 4
    assert adapter.scaling == 2.0
    assert set(adapter.weights) == {(i, m) for i in range(2) for m in LORA_MODULES}
    for (_, module), (a, b) in adapter.weights.items():
        in_f, out_f = lora_module_features(CONFIG, module)
        assert a.shape == (4, in_f) and b.shape == (out_f, 4)
        for arr in (a, b):
            assert arr.dtype == np.float32 and arr.flags.c_contiguous
            assert not arr.flags.writeable
        assert np.abs(b).max() > 0


def test_loaded_values_match_the_file(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path, target_modules=("q_proj",), layers=(1,), seed=3)
    adapter = load_lora_adapter("tiny", path, CONFIG)
    assert set(adapter.weights) == {(1, "q_proj")}
    from safetensors.numpy import load_file

    raw = load_file(str(path / "adapter_model.safetensors"))
    a, b = adapter.weights[(1, "q_proj")]
    np.testing.assert_array_equal(a, raw[lora_key(1, "q_proj", "A")])
    np.testing.assert_array_equal(b, raw[lora_key(1, "q_proj", "B")])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_adapters_become_float32(tmp_path: Path, dtype: Any) -> None:
    ref = load_lora_adapter("f32", _adapter_dir(tmp_path, "f32", seed=4), CONFIG)
    half = load_lora_adapter("h", _adapter_dir(tmp_path, "h", seed=4, dtype=dtype), CONFIG)
    for key, (a, b) in half.weights.items():
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, ref.weights[key][0], rtol=1e-2, atol=1e-4)
        np.testing.assert_allclose(b, ref.weights[key][1], rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize(
    ("rank", "alpha", "rslora", "scaling"),
    [(4, 8, False, 2.0), (8, 8, False, 1.0), (4, 8, True, 4.0), (16, 32, True, 8.0)],
)
def test_scaling(tmp_path: Path, rank: int, alpha: int, rslora: bool, scaling: float) -> None:
    path = _adapter_dir(tmp_path, rank=rank, alpha=alpha, use_rslora=rslora)
    assert load_lora_adapter("s", path, CONFIG).scaling == pytest.approx(scaling)
    assert scaling == pytest.approx(alpha / (math.sqrt(rank) if rslora else rank))


@pytest.mark.parametrize(
    ("target_modules", "expected"),
    [
        ("all-linear", set(LORA_MODULES)),
        (r".*\.(q_proj|v_proj)", {"q_proj", "v_proj"}),
        (["self_attn.q_proj", "v_proj"], {"q_proj", "v_proj"}),
    ],
)
def test_target_modules_forms(tmp_path: Path, target_modules: Any, expected: set[str]) -> None:
    path = _adapter_dir(
        tmp_path,
        target_modules=tuple(sorted(expected)),
        config_overrides={"target_modules": target_modules},
    )
    adapter = load_lora_adapter("t", path, CONFIG)
    assert {m for _, m in adapter.weights} == expected


def test_weights_outside_target_modules_refused(tmp_path: Path) -> None:
    path = _adapter_dir(
        tmp_path, target_modules=("q_proj", "v_proj"), config_overrides={"target_modules": "q.*"}
    )
    with pytest.raises(ModelLoadError, match="does not list"):
        load_lora_adapter("t", path, CONFIG)


def test_wrong_shape_names_adapter_key_and_both_shapes(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path, target_modules=("k_proj",))
    other = ModelConfig(**{**_config_dict(), "num_kv_heads": 4})  # kv_dim 24 instead of 12
    with pytest.raises(ModelLoadError) as info:
        load_lora_adapter("mine", path, other)
    message = info.value.message
    assert "'mine'" in message
    assert lora_key(0, "k_proj", "B") in message
    assert "[12, 4]" in message and "expected [24, 4]" in message
    assert info.value.field == "lora_path"


def test_adapter_for_more_layers_refused(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path, target_modules=("q_proj",))
    one_layer = ModelConfig(**{**_config_dict(), "num_layers": 1})
    with pytest.raises(ModelLoadError, match="layer 1, but the base model has 1 layers"):
        load_lora_adapter("x", path, one_layer)


def test_missing_half_is_named(tmp_path: Path) -> None:
    path = tmp_path / "half"
    _adapter_dir(tmp_path, "half", target_modules=("q_proj",), layers=(0,))
    rng = np.random.default_rng(0)
    write_safetensors(
        path / "adapter_model.safetensors",
        {lora_key(0, "q_proj", "A"): rng.standard_normal((4, 16))},
    )
    with pytest.raises(ModelLoadError, match=r"lora_B\.weight' is missing"):
        load_lora_adapter("x", path, CONFIG)


def test_unsupported_tensor_refused(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path, target_modules=("q_proj",), layers=(0,))
    write_safetensors(
        path / "adapter_model.safetensors",
        {"base_model.model.lm_head.lora_A.weight": np.zeros((4, 16))},
    )
    with pytest.raises(ModelLoadError, match="lm_head"):
        load_lora_adapter("x", path, CONFIG)


def test_pickle_adapter_refused_with_how_to_convert(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_model.safetensors").unlink()
    (path / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError) as info:
        load_lora_adapter("p", path, CONFIG)
    message = info.value.message
    assert "adapter_model.bin" in message and "pickle" in message
    assert "arbitrary code" in message and "safe_serialization=True" in message


def test_safetensors_preferred_over_a_pickle_beside_it(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_model.bin").write_bytes(b"ignored")
    assert load_lora_adapter("p", path, CONFIG).rank == 4


def test_missing_directory_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError) as info:
        load_lora_adapter("x", missing, CONFIG)
    assert str(missing) in info.value.message and info.value.field == "lora_path"


def test_missing_config_names_path(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json is missing") as info:
        load_lora_adapter("x", path, CONFIG)
    assert str(path) in info.value.message


def test_missing_weights_names_path(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"adapter_model\.safetensors is missing"):
        load_lora_adapter("x", path, CONFIG)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_lora_adapter("x", path, CONFIG)


@pytest.mark.parametrize(
    ("override", "field", "needle"),
    [
        ({"fan_in_fan_out": True}, "fan_in_fan_out", "fan_in_fan_out=false"),
        ({"bias": "all"}, "bias", "'none'"),
        ({"bias": "lora_only"}, "bias", "'lora_only'"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save", "lm_head"),
        ({"use_dora": True}, "use_dora", "DoRA"),
        ({"rank_pattern": {"q_proj": 8}}, "rank_pattern", "one r"),
        ({"alpha_pattern": {"q_proj": 8}}, "alpha_pattern", "one r"),
        ({"r": 0}, "r", ">= 1"),
        ({"r": "4"}, "r", "'4'"),
        ({"lora_alpha": None}, "lora_alpha", "None"),
        ({"peft_type": "IA3"}, "peft_type", "'IA3'"),
        ({"target_modules": ["q_proj", "lm_head"]}, "target_modules", "lm_head"),
        ({"target_modules": []}, "target_modules", "non-empty"),
        ({"target_modules": "(["}, "target_modules", "regex"),
    ],
)
def test_adapter_config_refusals(
    tmp_path: Path, override: dict[str, Any], field: str, needle: str
) -> None:
    path = _adapter_dir(tmp_path, config_overrides=override)
    with pytest.raises(ModelLoadError) as info:
        load_lora_adapter("cfg", path, CONFIG)
    assert info.value.field == field
    assert needle in info.value.message and "'cfg'" in info.value.message


def test_config_not_json(tmp_path: Path) -> None:
    path = _adapter_dir(tmp_path)
    (path / "adapter_config.json").write_text("{nope")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_lora_adapter("x", path, CONFIG)


def test_merge_lora_is_w_plus_scaled_ba(tmp_path: Path) -> None:
    adapter = load_lora_adapter("m", _adapter_dir(tmp_path, target_modules=("o_proj",)), CONFIG)
    rng = np.random.default_rng(0)
    base = {base_key(i, "o_proj"): rng.standard_normal((16, 24)).astype(np.float32) for i in (0, 1)}
    base["model.norm.weight"] = np.ones(16, dtype=np.float32)
    merged = merge_lora(base, adapter)
    a, b = adapter.weights[(0, "o_proj")]
    x = rng.standard_normal(24)
    # The merged weight applied to x equals base + scaling * B(Ax): the LoRA forward.
    expected = base[base_key(0, "o_proj")] @ x + adapter.scaling * (b @ (a @ x))
    np.testing.assert_allclose(merged[base_key(0, "o_proj")] @ x, expected, rtol=1e-5, atol=1e-5)
    assert merged["model.norm.weight"] is base["model.norm.weight"]
    assert not np.array_equal(merged[base_key(1, "o_proj")], base[base_key(1, "o_proj")])


def _config_dict() -> dict[str, Any]:
    return {
        "vocab_size": CONFIG.vocab_size,
        "hidden_size": CONFIG.hidden_size,
        "intermediate_size": CONFIG.intermediate_size,
        "num_layers": CONFIG.num_layers,
        "num_heads": CONFIG.num_heads,
        "num_kv_heads": CONFIG.num_kv_heads,
        "head_dim": CONFIG.head_dim,
        "max_position_embeddings": CONFIG.max_position_embeddings,
    }


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]},
        {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
    ],
)
def test_malformed_header_entries_are_load_errors(tmp_path: Path, entry: dict[str, Any]) -> None:
    adapter = _adapter_dir(tmp_path)
    header = json.dumps({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": entry})
    raw = header.encode()
    (adapter / "adapter_model.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + b"\0" * 4
    )
    with pytest.raises(ModelLoadError, match="malformed"):
        load_lora_adapter("a", adapter, CONFIG)
