"""Tiny random PEFT LoRA adapters written inside a test's tmp_path, and the merged-weights
oracle: a request through an adapter must equal the base model with ``W + s * B @ A``.

The directory is what PEFT's ``save_pretrained`` writes (``adapter_config.json`` +
``adapter_model.safetensors``, keys ``base_model.model.model.layers.{i}...lora_A.weight``);
``B`` is non-zero (PEFT initialises it to zero) so the adapter really changes outputs.
Tests only; no network.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shipit.engine.lora_files import LORA_MODULES, LoraAdapter, lora_module_features
from shipit.engine.model_config import ModelConfig

_ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})

# q_dim (4 * 6 = 24), kv_dim (12), hidden (16) and intermediate (40) all differ, so a
# transposed or swapped matrix can never pass the shape check by accident.
DISTINCT_DIMS = ModelConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=40,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=6,
    max_position_embeddings=128,
)


def module_parent(module: str) -> str:
    return "self_attn" if module in _ATTENTION else "mlp"


def lora_key(layer: int, module: str, half: Literal["A", "B"]) -> str:
    """The tensor name PEFT saves for one half of one module's adapter."""
    return (
        f"base_model.model.model.layers.{layer}.{module_parent(module)}.{module}.lora_{half}.weight"
    )


def base_key(layer: int, module: str) -> str:
    """The Hugging Face name of the base weight the adapter modifies."""
    return f"model.layers.{layer}.{module_parent(module)}.{module}.weight"


def write_safetensors(
    path: Path,
    tensors: Mapping[str, np.ndarray],
    *,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
) -> None:
    """A minimal safetensors writer that can also write bfloat16 (numpy has no such dtype)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        values = np.ascontiguousarray(array, dtype=np.float32)
        if dtype == "bfloat16":
            # Round to nearest even on the upper 16 bits of each float32.
            bits = values.view(np.uint32).astype(np.uint64)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            raw = rounded.astype("<u2").tobytes()
            code = "BF16"
        elif dtype == "float16":
            raw, code = values.astype("<f2").tobytes(), "F16"
        else:
            raw, code = values.astype("<f4").tobytes(), "F32"
        header[name] = {
            "dtype": code,
            "shape": list(values.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks))


def write_tiny_lora(
    path: Path,
    config: ModelConfig,
    *,
    rank: int = 4,
    alpha: float = 8,
    target_modules: Sequence[str] = LORA_MODULES,
    seed: int = 0,
    scale: float = 0.05,
    use_rslora: bool = False,
    layers: Sequence[int] | None = None,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a PEFT LoRA directory for ``config`` at ``path``; return ``path``.

    ``A`` and ``B`` are ``scale * N(0, 1)``; ``layers`` limits which layers get adapters
    (default: all). ``config_overrides`` patches ``adapter_config.json`` (to test refusals).
    """
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in range(config.num_layers) if layers is None else layers:
        for module in target_modules:
            in_f, out_f = lora_module_features(config, module)
            tensors[lora_key(layer, module, "A")] = (
                rng.standard_normal((rank, in_f)) * scale
            ).astype(np.float32)
            tensors[lora_key(layer, module, "B")] = (
                rng.standard_normal((out_f, rank)) * scale
            ).astype(np.float32)
    write_safetensors(path / "adapter_model.safetensors", tensors, dtype=dtype)
    adapter_config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "tiny-llama",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": use_rslora,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None if layers is None else list(layers),
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
        "init_lora_weights": True,
    }
    adapter_config.update(config_overrides or {})
    (path / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return path


def merge_lora(weights: Mapping[str, np.ndarray], adapter: LoraAdapter) -> dict[str, np.ndarray]:
    """Base weights (HF names, ``[out, in]``) with ``W + scaling * B @ A`` merged, as a new
    dict; the input is not modified. The reference for "a LoRA request equals the merged model".
    """
    merged = dict(weights)
    for (layer, module), (a, b) in adapter.weights.items():
        key = base_key(layer, module)
        base = weights[key]
        delta = adapter.scaling * (b.astype(np.float64) @ a.astype(np.float64))
        merged[key] = (base.astype(np.float64) + delta).astype(base.dtype)
    return merged
