"""A PEFT LoRA adapter on disk: reading one directory and validating it against the base model.

Owns what a LoRA adapter is to shipit (per-layer, per-projection ``A``/``B`` float32 matrices
and one scaling factor) and how a PEFT directory (``adapter_config.json`` +
``adapter_model.safetensors``) is checked against the base model's shape, with errors that
name the file, the key and what to do. It must not apply adapters to activations (the
forward pass does), load pickle checkpoints, or decide which adapters stay loaded
(``engine.lora`` does).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from shipit.core.errors import ModelLoadError, UnsafeCheckpointError
from shipit.engine.model_config import ModelConfig
from shipit.engine.safetensors_io import FLOAT_DTYPES, read_safetensors

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ATTENTION_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.ckpt")
# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight (PEFT strips the adapter
# name on save; some older files keep it, e.g. ``lora_A.default.weight``).
_KEY = re.compile(
    r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight"
)
_CONVERT_HINT = (
    "convert it once, in an environment you trust, with PEFT: "
    "`PeftModel.from_pretrained(base, path).save_pretrained(out, safe_serialization=True)` "
    "(or `safetensors.torch.save_file(torch.load('adapter_model.bin', weights_only=True), "
    "'adapter_model.safetensors')`)"
)


@dataclass(frozen=True, slots=True, eq=False)
class LoraAdapter:
    """One loaded adapter. Arrays are float32, C-contiguous and read-only (shared by requests)."""

    name: str
    path: str
    rank: int
    scaling: float  # lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora
    # (layer index, module name) -> (A [r, in_features], B [out_features, r])
    weights: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]


def lora_module_features(config: ModelConfig, module: str) -> tuple[int, int]:
    """``(in_features, out_features)`` of a base projection, as its LoRA A/B must match."""
    q_dim = config.num_heads * config.head_dim
    kv_dim = config.num_kv_heads * config.head_dim
    hidden, inter = config.hidden_size, config.intermediate_size
    features = {
        "q_proj": (hidden, q_dim),
        "k_proj": (hidden, kv_dim),
        "v_proj": (hidden, kv_dim),
        "o_proj": (q_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    if module not in features:
        raise ValueError(f"{module!r} is not a LoRA module; expected one of {LORA_MODULES}")
    return features[module]


def load_lora_adapter(name: str, path: str | Path, config: ModelConfig) -> LoraAdapter:
    """Read and validate a PEFT LoRA directory against ``config``; errors name what is wrong."""
    directory = Path(path)
    if not directory.is_dir():
        raise ModelLoadError(
            f"LoRA adapter {name!r}: {directory} is not a directory; point lora_path at a PEFT "
            f"adapter directory holding {CONFIG_FILE} and {WEIGHTS_FILE}",
            field="lora_path",
        )
    settings = _read_adapter_config(name, directory)
    rank, scaling, targets = _check_adapter_config(name, directory, settings)
    weights_file = directory / WEIGHTS_FILE
    if not weights_file.is_file():
        pickles = [f for f in _PICKLE_FILES if (directory / f).is_file()]
        if pickles:
            raise UnsafeCheckpointError(
                f"LoRA adapter {name!r}: {directory / pickles[0]} is a pickle file, which can "
                "run arbitrary code when loaded, so shipit only loads safetensors; "
                + _CONVERT_HINT,
                field="lora_path",
            )
        raise ModelLoadError(
            f"LoRA adapter {name!r}: {weights_file} is missing; a PEFT adapter directory "
            f"holds {CONFIG_FILE} and {WEIGHTS_FILE}",
            field="lora_path",
        )
    tensors = read_safetensors(
        weights_file,
        dtypes=FLOAT_DTYPES,
        context=f"LoRA adapter {name!r}: ",
        field="lora_path",
    )
    weights = _collect_weights(name, weights_file, tensors, config, rank, targets)
    return LoraAdapter(
        name=name,
        path=str(directory.resolve()),
        rank=rank,
        scaling=scaling,
        weights=MappingProxyType(weights),
    )


def _read_adapter_config(name: str, directory: Path) -> dict[str, Any]:
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        raise ModelLoadError(
            f"LoRA adapter {name!r}: {config_file} is missing; is {directory} a PEFT adapter "
            "directory (saved with `save_pretrained`)?",
            field="lora_path",
        )
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"LoRA adapter {name!r}: {config_file} is not valid JSON ({exc})", field="lora_path"
        ) from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(
            f"LoRA adapter {name!r}: {config_file} must hold a JSON object; "
            f"got {type(raw).__name__}",
            field="lora_path",
        )
    return raw


def _check_adapter_config(
    name: str, directory: Path, raw: dict[str, Any]
) -> tuple[int, float, frozenset[str] | re.Pattern[str]]:
    """Validate the PEFT settings shipit depends on; return (rank, scaling, targets)."""
    where = f"LoRA adapter {name!r} ({directory / CONFIG_FILE})"

    def refuse(key: str, message: str) -> ModelLoadError:
        return ModelLoadError(f"{where}: {key} {message}", field=key)

    peft_type = raw.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise refuse("peft_type", f"is {peft_type!r}; shipit loads LORA adapters only")
    rank = raw.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise refuse("r", f"must be an integer >= 1; got {rank!r}")
    alpha = raw.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not alpha > 0:
        raise refuse("lora_alpha", f"must be a number > 0; got {alpha!r}")
    use_rslora = raw.get("use_rslora", False)
    if not isinstance(use_rslora, bool):
        raise refuse("use_rslora", f"must be true or false; got {use_rslora!r}")
    if raw.get("fan_in_fan_out", False):
        raise refuse(
            "fan_in_fan_out",
            "is true (weights stored transposed, as for GPT-2's Conv1D); Llama-family "
            "adapters use false; re-train or re-save the adapter with fan_in_fan_out=false",
        )
    bias = raw.get("bias", "none")
    if bias != "none":
        raise refuse(
            "bias", f"is {bias!r}; shipit supports only 'none' (adapters without bias terms)"
        )
    if raw.get("modules_to_save"):
        raise refuse(
            "modules_to_save",
            f"is {raw['modules_to_save']!r}; adapters that replace whole modules (e.g. "
            "lm_head, embed_tokens) are not supported; use only low-rank target_modules",
        )
    if raw.get("use_dora", False):
        raise refuse("use_dora", "is true; DoRA adapters are not supported, only plain LoRA")
    for key in ("rank_pattern", "alpha_pattern"):
        if raw.get(key):
            raise refuse(
                key,
                f"is {raw[key]!r}; shipit needs one r and lora_alpha for every module; "
                "re-train without per-module overrides",
            )
    targets = _parse_targets(raw.get("target_modules"), refuse)
    scaling = float(alpha) / (math.sqrt(rank) if use_rslora else rank)
    return rank, scaling, targets


def _parse_targets(
    value: object, refuse: Callable[[str, str], ModelLoadError]
) -> frozenset[str] | re.Pattern[str]:
    allowed = ", ".join(LORA_MODULES)
    if value == "all-linear":
        return frozenset(LORA_MODULES)
    if isinstance(value, str):
        # PEFT matches a string against full module names, e.g. model.layers.0.self_attn.q_proj.
        try:
            return re.compile(value)
        except re.error as exc:
            raise refuse("target_modules", f"{value!r} is not a valid regex ({exc})") from exc
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise refuse(
            "target_modules",
            f"must be a non-empty list of module names, 'all-linear' or a regex; got {value!r}",
        )
    # PEFT matches list entries against the end of the module name ("self_attn.q_proj" too).
    unknown = sorted({v for v in value if v.rsplit(".", 1)[-1] not in LORA_MODULES})
    if unknown:
        raise refuse(
            "target_modules",
            f"names {unknown}; shipit applies LoRA only to {allowed}",
        )
    return frozenset(v.rsplit(".", 1)[-1] for v in value)


def _collect_weights(
    name: str,
    path: Path,
    tensors: Mapping[str, np.ndarray],
    config: ModelConfig,
    rank: int,
    targets: frozenset[str] | re.Pattern[str],
) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """Pair every lora_A with its lora_B, checking names, layers and shapes on the way."""
    where = f"LoRA adapter {name!r} ({path})"
    halves: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, tensor in tensors.items():
        layer, module, half = _check_tensor(where, key, tensor, config, rank, targets)
        halves.setdefault((layer, module), {})[half] = tensor
    if not halves:
        raise ModelLoadError(f"{where}: holds no LoRA tensors", field="lora_path")
    weights: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for (layer, module), pair in sorted(halves.items()):
        missing = sorted({"A", "B"} - pair.keys())
        if missing:
            parent = "self_attn" if module in _ATTENTION_MODULES else "mlp"
            raise ModelLoadError(
                f"{where}: tensor 'base_model.model.model.layers.{layer}.{parent}.{module}."
                f"lora_{missing[0]}.weight' is missing; every LoRA module needs lora_A and lora_B",
                field="lora_path",
            )
        weights[(layer, module)] = (_frozen_f32(pair["A"]), _frozen_f32(pair["B"]))
    return weights


def _check_tensor(
    where: str,
    key: str,
    tensor: np.ndarray,
    config: ModelConfig,
    rank: int,
    targets: frozenset[str] | re.Pattern[str],
) -> tuple[int, str, str]:
    """(layer, module, half) of one adapter tensor, once its name, layer and shape check out."""

    def refuse(why: str) -> ModelLoadError:
        return ModelLoadError(f"{where}: tensor {key!r} {why}", field="lora_path")

    match = _KEY.fullmatch(key)
    if match is None:
        raise refuse(
            "is not a LoRA weight shipit can apply; expected keys like "
            "'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' for "
            f"modules {', '.join(LORA_MODULES)}"
        )
    layer, parent, module, half = int(match[1]), match[2], match[3], match[4]
    expected_parent = "self_attn" if module in _ATTENTION_MODULES else "mlp"
    if module not in LORA_MODULES or parent != expected_parent:
        raise refuse(
            f"targets {parent}.{module}; shipit applies LoRA only to {', '.join(LORA_MODULES)}"
        )
    if layer >= config.num_layers:
        raise refuse(
            f"is for layer {layer}, but the base model has {config.num_layers} layers "
            f"(0..{config.num_layers - 1}); was this adapter trained for a different base model?"
        )
    full_name = f"model.layers.{layer}.{parent}.{module}"
    wanted = (
        module in targets
        if isinstance(targets, frozenset)
        else targets.fullmatch(full_name) is not None
    )
    if not wanted:
        raise refuse(
            f"is for {full_name}, which target_modules in {CONFIG_FILE} does not list; the "
            "config and the weights disagree"
        )
    in_f, out_f = lora_module_features(config, module)
    expected = (rank, in_f) if half == "A" else (out_f, rank)
    if tensor.shape != expected:
        raise refuse(
            f"has shape {list(tensor.shape)}, expected {list(expected)} (r={rank}; {module} "
            f"maps {in_f} -> {out_f} features in this base model); was this adapter trained "
            "for a different base model?"
        )
    return layer, module, half


def _frozen_f32(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    out.setflags(write=False)
    return out
