"""The shape of a Llama-architecture model, as one frozen record.

Built from a Hugging Face ``config.json`` or from GGUF metadata by ``engine.loader``;
read by the forward pass, the KV cache and the capacity planner. No IO here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipit.core.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    # Qwen2-style models carry biases on q/k/v projections.
    attention_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    architecture: str = "LlamaForCausalLM"

    @property
    def kv_bytes_per_token(self) -> int:
        """float32 K and V for every layer: 2 * layers * kv_heads * head_dim * 4."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Read a Hugging Face ``config.json`` mapping; errors name the missing key."""
        archs = raw.get("architectures") or ["LlamaForCausalLM"]
        arch = str(archs[0])
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"{source}: architecture {arch!r} is not supported; "
                f"shipit's engine runs {', '.join(SUPPORTED_ARCHITECTURES)}",
                field="architectures",
            )
        try:
            hidden = int(raw["hidden_size"])
            heads = int(raw["num_attention_heads"])
            eos = raw.get("eos_token_id")
            eos_ids = (
                tuple(int(e) for e in eos)
                if isinstance(eos, list)
                else ((int(eos),) if eos is not None else ())
            )
            return cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                rope_theta=float(raw.get("rope_theta", 10000.0)),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                attention_bias=bool(raw.get("attention_bias", arch == "Qwen2ForCausalLM")),
                bos_token_id=(
                    int(raw["bos_token_id"]) if raw.get("bos_token_id") is not None else None
                ),
                eos_token_ids=eos_ids,
                architecture=arch,
            )
        except KeyError as exc:
            raise ModelLoadError(
                f"{source}: required key {exc.args[0]!r} is missing", field=str(exc.args[0])
            ) from exc
