"""Catalog records: one frozen dataclass per accelerator, model, provider and price.

Owns the shape of catalog data and the unit conversions on it (GiB, TB/s, TFLOPS to bytes,
bytes/s and FLOP/s). Must not read files or hold a catalog; ``catalog`` does the loading.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


def normalize_id(name: str) -> str:
    """How catalog ids and aliases compare: lower case, dashes for spaces and underscores."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator: dense peak throughput, memory and link, with source and date."""

    id: str
    name: str
    aliases: tuple[str, ...]
    memory_gib: float
    bandwidth_tb_s: float
    bf16_tflops: float
    interconnect: str
    interconnect_gb_s: float
    max_tp: int
    source: str
    as_of: str
    fp8_tflops: float | None = None
    fp4_tflops: float | None = None
    int8_tops: float | None = None

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_tb_s * 1e12

    @property
    def interconnect_bytes_s(self) -> float:
        return self.interconnect_gb_s * 1e9

    def peak_flops(self, compute: str) -> float:
        """Dense peak FLOP/s for a compute precision; falls back to BF16 where unsupported."""
        table = {"fp8": self.fp8_tflops, "fp4": self.fp4_tflops, "int8": self.int8_tops}
        value = table.get(compute)
        return (value if value is not None else self.bf16_tflops) * 1e12


@dataclass(frozen=True, slots=True)
class MoeSpec:
    num_experts: int
    experts_per_token: int
    moe_intermediate_size: int
    num_shared_experts: int = 0
    first_dense_layers: int = 0


@dataclass(frozen=True, slots=True)
class MlaSpec:
    """DeepSeek multi-head latent attention: the KV cache holds a compressed latent per token."""

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True, slots=True)
class SlidingSpec:
    """Layers that attend to a window of recent tokens only (their KV is capped at the window)."""

    window: int
    num_sliding_layers: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's shape: shapes, not weights. The one model record.

    The planner reads it from the catalog or a ``config.json`` (``hf_config``); the engine
    builds its run-time view from it (``engine.model_config``). The fields after ``sliding``
    matter to running the model rather than to sizing it, and default to Llama's.
    """

    id: str
    name: str
    aliases: tuple[str, ...]
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_context: int
    native_dtype: str
    source: str
    as_of: str
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    params_published: float | None = None
    extra_params: float = 0.0
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    sliding: SlidingSpec | None = None
    architecture: str | None = None  # Hugging Face ``architectures[0]``; None when not stated
    rope_theta: float = 10000.0
    rope_scaling: str | None = None  # RoPE scaling type (llama3, yarn, ...); None when unscaled
    rms_norm_eps: float = 1e-5
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    spot_discount: float | None
    reserved_1y_discount: float | None
    discount_source: str


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """On-demand price of one GPU-hour at one provider and region, with its date."""

    provider: str
    region: str
    gpu: str
    usd_per_gpu_hour: float
    as_of: str
    source: str
