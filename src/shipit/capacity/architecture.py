"""What a model's shape implies: parameter counts, weight bytes, KV bytes per token, FLOPs.

Pure functions of a ``ModelSpec`` (and a precision). Owns the formulas, in one place, that
memory, performance and cost all read. Must not know about GPUs, prices or traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.capacity.dtypes import WeightDtype
from shipit.capacity.records import ModelSpec


@dataclass(frozen=True, slots=True)
class ParamCounts:
    """Parameters by role. ``expert`` is every routed expert; ``active_*`` is one token's share."""

    embedding: float
    lm_head: float
    attention: float
    dense_mlp: float
    expert: float
    active_expert: float
    other: float

    @property
    def total(self) -> float:
        return (
            self.embedding
            + self.lm_head
            + self.attention
            + self.dense_mlp
            + self.expert
            + self.other
        )

    @property
    def active_matmul(self) -> float:
        """Weights one token multiplies through (embedding lookup is not a matmul)."""
        return self.lm_head + self.attention + self.dense_mlp + self.active_expert


def _attention_params_per_layer(m: ModelSpec) -> float:
    h = m.hidden_size
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        return (
            h * a.q_lora_rank
            + a.q_lora_rank * m.num_heads * qk
            + h * (a.kv_lora_rank + a.qk_rope_head_dim)
            + a.kv_lora_rank * m.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
            + m.num_heads * a.v_head_dim * h
        )
    q = m.num_heads * m.head_dim
    kv = m.num_kv_heads * m.head_dim
    bias = (q + 2 * kv) if m.qkv_bias else 0
    return 2 * h * q + 2 * h * kv + bias


def param_counts(m: ModelSpec) -> ParamCounts:
    """Parameter counts from the architecture (gated MLPs: three matrices per MLP)."""
    h = m.hidden_size
    embedding = float(m.vocab_size * h)
    lm_head = embedding  # tied or not, the LM head multiplies every generated token
    layers_moe = 0
    dense_mlp = expert = active_expert = 0.0
    if m.moe is not None:
        e = m.moe
        layers_moe = m.num_layers - e.first_dense_layers
        per_expert = 3.0 * h * e.moe_intermediate_size
        shared = e.num_shared_experts * per_expert
        router = float(h * e.num_experts)
        expert = layers_moe * e.num_experts * per_expert
        active_expert = layers_moe * e.experts_per_token * per_expert
        dense_mlp = layers_moe * (shared + router)
    dense_mlp += (m.num_layers - layers_moe) * 3.0 * h * m.intermediate_size
    norms = float(m.num_layers * 2 * h + h)
    return ParamCounts(
        embedding=embedding,
        lm_head=lm_head,
        attention=m.num_layers * _attention_params_per_layer(m),
        dense_mlp=dense_mlp,
        expert=expert,
        active_expert=active_expert,
        other=norms + m.extra_params,
    )


def total_params(m: ModelSpec) -> float:
    """Stored parameters: a tied LM head is stored once."""
    c = param_counts(m)
    return c.total - (c.lm_head if m.tie_word_embeddings else 0.0)


def weight_bytes(m: ModelSpec, dtype: WeightDtype) -> float:
    """Bytes of weights in memory for the whole model (all tensor-parallel ranks together).

    Quantised formats cover only the layers in their scope; the rest stay 16-bit.
    """
    c = param_counts(m)
    head = 0.0 if m.tie_word_embeddings else c.lm_head
    edges = c.embedding + head
    linear = c.attention + c.dense_mlp + c.expert
    q = dtype.bytes_per_param
    if dtype.scope == "all":
        return (edges + linear) * q + c.other * 2.0
    if dtype.scope == "experts" and m.moe is not None:
        return c.expert * q + (edges + c.attention + c.dense_mlp + c.other) * 2.0
    return linear * q + (edges + c.other) * 2.0


def expert_bytes(m: ModelSpec, dtype: WeightDtype) -> float:
    """Bytes of all routed experts (zero for dense models)."""
    c = param_counts(m)
    q = dtype.bytes_per_param if dtype.scope in ("linear", "all", "experts") else 2.0
    return c.expert * q


def kv_elements_per_token_per_layer(m: ModelSpec) -> int:
    """K and V elements one token stores in one layer (MLA: the latent and the rope key)."""
    if m.mla is not None:
        return m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
    return 2 * m.num_kv_heads * m.head_dim


def kv_bytes_per_token(m: ModelSpec, kv_bytes: float, *, tp: int = 1) -> float:
    """KV bytes one token holds on one GPU, every layer counted as full attention.

    Under tensor parallelism KV heads are split across ranks and replicated when there are
    fewer heads than ranks; MLA's latent is replicated on every rank (vLLM's layout).
    """
    per_layer = kv_elements_per_token_per_layer(m)
    if m.mla is None:
        heads_per_rank = max(1, -(-m.num_kv_heads // tp))
        per_layer = 2 * heads_per_rank * m.head_dim
    return m.num_layers * per_layer * kv_bytes


def kv_bytes_for_context(
    m: ModelSpec, kv_bytes: float, context_tokens: int, *, tp: int = 1
) -> float:
    """KV bytes of one sequence of ``context_tokens`` on one GPU; sliding layers hold the window."""
    full = kv_bytes_per_token(m, kv_bytes, tp=tp)
    if m.sliding is None:
        return full * context_tokens
    per_layer = full / m.num_layers
    n_slide = m.sliding.num_sliding_layers
    windowed = min(context_tokens, m.sliding.window)
    return per_layer * ((m.num_layers - n_slide) * context_tokens + n_slide * windowed)


def attention_flops_per_key(m: ModelSpec) -> float:
    """FLOPs for one query token against one cached key, all layers (QK^T and PV)."""
    if m.mla is not None:
        qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim
        return 2.0 * m.num_layers * m.num_heads * (qk + m.mla.v_head_dim)
    return 4.0 * m.num_layers * m.num_heads * m.head_dim


def attended_keys(m: ModelSpec, context_tokens: float) -> float:
    """Mean keys a query sees per layer, with sliding layers capped at their window."""
    if m.sliding is None:
        return context_tokens
    n_slide = m.sliding.num_sliding_layers
    full = m.num_layers - n_slide
    windowed = min(context_tokens, m.sliding.window)
    return (full * context_tokens + n_slide * windowed) / m.num_layers
