"""The engine's run-time view of a model: ``ModelConfig``, built from the one model record.

The model's shape has one record, ``capacity.ModelSpec``, and one ``config.json`` parser,
``capacity.model_from_hf_config``; ``ModelConfig.from_spec`` is the one function that turns
that record into what the forward pass, the KV cache and the LoRA reader need, and refuses
what the engine cannot run (other architectures, RoPE scaling, mixture-of-experts, latent or
sliding-window attention). ``ModelConfig.from_hf_dict`` is the two together. No IO here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shipit.capacity import ModelSpec, model_from_hf_config
from shipit.core.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What the embedded engine reads of a model's shape (Hugging Face names)."""

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
        """The engine's float32 K and V for every layer: 2 * layers * kv_heads * head_dim * 4."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelConfig:
        """The engine's view of ``spec``; refuses what the engine cannot run, naming why."""
        where = spec.source
        arch = spec.architecture or "LlamaForCausalLM"
        refusals = (
            (
                arch not in SUPPORTED_ARCHITECTURES,
                "architectures",
                f"architecture {arch!r} is not supported; "
                f"shipit's engine runs {', '.join(SUPPORTED_ARCHITECTURES)}",
            ),
            (
                spec.rope_scaling is not None,
                "rope_scaling",
                f"rope_scaling {spec.rope_scaling!r} is not supported by shipit's engine; "
                "use a model without RoPE scaling",
            ),
            (
                spec.moe is not None or spec.mla is not None or spec.sliding is not None,
                "architectures",
                "mixture-of-experts, latent (MLA) and sliding-window attention are not "
                "supported by shipit's engine; use a dense Llama-family model",
            ),
        )
        for refused, key, why in refusals:
            if refused:
                raise ModelLoadError(f"{where}: {why}", field=key)
        return cls(
            vocab_size=spec.vocab_size,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            num_kv_heads=spec.num_kv_heads,
            head_dim=spec.head_dim,
            max_position_embeddings=spec.max_context,
            rope_theta=spec.rope_theta,
            rms_norm_eps=spec.rms_norm_eps,
            tie_word_embeddings=spec.tie_word_embeddings,
            attention_bias=spec.qkv_bias,
            bos_token_id=spec.bos_token_id,
            eos_token_ids=spec.eos_token_ids,
            architecture=arch,
        )

    @classmethod
    def from_hf_dict(cls, raw: Mapping[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Parse a Hugging Face ``config.json`` mapping with the one parser, then view it."""
        spec = model_from_hf_config(raw, source=source, architectures=SUPPORTED_ARCHITECTURES)
        return cls.from_spec(spec)
