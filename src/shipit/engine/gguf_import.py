"""Read a llama.cpp GGUF file into Hugging Face form: config dict, float32 weights, tokenizer.

Owns everything GGUF-specific: metadata keys, llama.cpp tensor names, dequantisation, undoing
the converter's Q/K row permutation, and rebuilding the byte-level BPE tokenizer from
``tokenizer.ggml.*``. The result is what a Hugging Face directory would hold, so the rest of
the engine only ever sees HF names and layout. It must not decide where files are cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from shipit.core.errors import ModelLoadError

# llama.cpp per-block tensor names -> Hugging Face Llama names.
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")

# GGUF token types (llama.cpp's llama_token_type).
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4

# Llama 3's pre-tokenizer split, as in its tokenizer.json.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True, slots=True)
class GGUFCheckpoint:
    """A GGUF file's content in Hugging Face terms."""

    config: dict[str, Any]  # what config.json would hold
    weights: dict[str, np.ndarray]  # HF names and layout, float32
    tokenizer: tokenizers.Tokenizer
    tokenizer_config: dict[str, Any]  # chat_template, bos_token, eos_token, ...


def hf_tensor_name(gguf_name: str) -> str:
    """Map a llama.cpp tensor name (``blk.3.attn_q.weight``) to its HF name."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _BLOCK_RE.match(gguf_name)
    if match and match.group(2) in _BLOCK_NAMES:
        return f"model.layers.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}"
    raise ModelLoadError(
        f"GGUF tensor {gguf_name!r} has no Llama equivalent; shipit's engine runs plain "
        "Llama-architecture models (no MoE, no RoPE frequency tables)",
        field=gguf_name,
    )


def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved rotary pairs -> split halves).

    llama.cpp's converter does ``w.reshape(n, 2, d // 2, ...).swapaxes(1, 2)`` per head so its
    RoPE can rotate adjacent pairs; HF's ``rotate_half`` rotates the two halves of each head.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    return np.ascontiguousarray(
        weight.reshape(n_heads, head_dim // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's own permutation (HF layout -> GGUF layout); the inverse of the above."""
    rows = weight.shape[0]
    head_dim = rows // n_heads
    return np.ascontiguousarray(
        weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _open(path: Path) -> GGUFReader:
    try:
        return GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: cannot be read as a GGUF file ({exc}); check the path and that the "
            "download is complete",
            field=str(path),
        ) from exc


def read_gguf(path: Path, *, progress: Callable[[str], None] | None = None) -> GGUFCheckpoint:
    """Read, dequantise and translate a Llama GGUF file."""
    reader = _open(path)
    meta = _Metadata(reader, path)
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelLoadError(
            f"{path}: GGUF architecture {arch!r} is not supported; shipit reads 'llama' GGUF "
            "files (or give a Hugging Face safetensors directory instead)",
            field="general.architecture",
        )
    if progress:
        progress(f"dequantising {len(reader.tensors)} tensors from {path.name} to float32 ...")
    weights = _read_weights(reader, meta)
    config = _config_from_metadata(meta, weights)
    return GGUFCheckpoint(
        config=config,
        weights=weights,
        tokenizer=_build_tokenizer(meta),
        tokenizer_config=_tokenizer_config(meta),
    )


def read_gguf_tokenizer(path: Path) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """Only the tokenizer of a GGUF file and its ``tokenizer_config`` (no tensor is read)."""
    reader = _open(path)
    meta = _Metadata(reader, path)
    return _build_tokenizer(meta), _tokenizer_config(meta)


class _Metadata:
    """GGUF key/value access whose errors name the file and the missing key."""

    def __init__(self, reader: GGUFReader, path: Path) -> None:
        self._fields = reader.fields
        self.path = path

    def has(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self._fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise ModelLoadError(
                f"{self.path}: GGUF metadata key {key!r} is missing; the file was not "
                "written by a llama.cpp Llama converter shipit understands",
                field=key,
            )
        return self._fields[key].contents()


def _read_weights(reader: GGUFReader, meta: _Metadata) -> dict[str, np.ndarray]:
    n_heads = int(meta.require("llama.attention.head_count"))
    n_kv_heads = int(meta.get("llama.attention.head_count_kv", n_heads))
    weights: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        # ggml lists dims fastest-first; numpy wants them slowest-first.
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        array = np.require(values.reshape(shape), np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        if ".q_proj." in name:
            array = unpermute_rotary(array, n_heads)
        elif ".k_proj." in name:
            array = unpermute_rotary(array, n_kv_heads)
        weights[name] = array
    return weights


def _config_from_metadata(meta: _Metadata, weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """The ``config.json`` a Hugging Face Llama checkpoint of this model would carry."""
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in weights:
        raise ModelLoadError(
            f"{meta.path}: RoPE scaling {scaling!r} is not supported by shipit's engine",
            field="llama.rope.scaling.type",
        )
    hidden = int(meta.require("llama.embedding_length"))
    heads = int(meta.require("llama.attention.head_count"))
    tokens = meta.require("tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(meta.require("llama.feed_forward_length")),
        "num_hidden_layers": int(meta.require("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(meta.get("llama.attention.key_length", hidden // heads)),
        "max_position_embeddings": int(meta.require("llama.context_length")),
        "rope_theta": _f32_to_decimal(meta.get("llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": _f32_to_decimal(meta.require("llama.attention.layer_norm_rms_epsilon")),
        "vocab_size": len(tokens),
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in weights,
        "torch_dtype": "float32",
    }
    for key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        if meta.has(f"tokenizer.ggml.{key}"):
            config[hf_key] = int(meta.get(f"tokenizer.ggml.{key}"))
    return config


def _f32_to_decimal(value: Any) -> float:
    """GGUF stores float32; 1e-5 reads back as 9.9999997e-06. Keep the decimal it came from."""
    return float(str(np.float32(value)))


def _pre_tokenizer(pre: str, path: Path) -> Any:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("default", "gpt-2", "gpt2"):
        return byte_level
    if pre in ("smollm", "starcoder", "refact"):
        # llama.cpp splits every digit apart, then applies the GPT-2 regex.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("llama-bpe", "llama3"):
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, no_regex])
    raise ModelLoadError(
        f"{path}: GGUF pre-tokenizer {pre!r} is not supported (known: default, gpt2, smollm, "
        "starcoder, refact, llama-bpe); use the model's Hugging Face directory instead",
        field="tokenizer.ggml.pre",
    )


def _build_tokenizer(meta: _Metadata) -> tokenizers.Tokenizer:
    """Rebuild the GPT-2 style byte-level BPE tokenizer from ``tokenizer.ggml.*``."""
    kind = meta.require("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelLoadError(
            f"{meta.path}: GGUF tokenizer model {kind!r} is not supported; shipit rebuilds "
            "'gpt2' (byte-level BPE) tokenizers only",
            field="tokenizer.ggml.model",
        )
    tokens: list[str] = list(meta.require("tokenizer.ggml.tokens"))
    types: list[int] = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    merges = [tuple(m.split(" ", 1)) for m in meta.require("tokenizer.ggml.merges")]
    inner = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    inner.pre_tokenizer = _pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "default")), meta.path)
    inner.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, t in enumerate(types) if t == _TOKEN_CONTROL]
    user = [tokens[i] for i, t in enumerate(types) if t == _TOKEN_USER_DEFINED]
    inner.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    inner.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if bos_id is not None and bool(meta.get("tokenizer.ggml.add_bos_token", False)):
        bos = tokens[int(bos_id)]
        inner.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, bos_id)],
        )
    else:
        inner.post_processor = processors.ByteLevel(trim_offsets=False)
    return inner


def _tokenizer_config(meta: _Metadata) -> dict[str, Any]:
    tokens = meta.require("tokenizer.ggml.tokens")
    settings: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(meta.require("llama.context_length")),
    }
    for key in ("bos", "eos", "unknown", "padding"):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            hf_key = {"unknown": "unk_token", "padding": "pad_token"}.get(key, f"{key}_token")
            settings[hf_key] = tokens[int(token_id)]
    template = meta.get("tokenizer.chat_template")
    if template:
        settings["chat_template"] = str(template)
    return settings
