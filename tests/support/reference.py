"""A dense, obviously-correct float32 Llama forward pass: the oracle for the real engine.

One sequence, no KV cache, no paging, no batching: it recomputes everything for every
position so it can be read top to bottom against the Hugging Face Llama code
(RMSNorm, RoPE with ``rotate_half``, grouped-query causal attention, SwiGLU MLP,
optional q/k/v biases, tied embeddings). Slow on purpose; tests only.
"""

from __future__ import annotations

import numpy as np

from shipit.engine.loader import LoadedModel
from shipit.engine.model_config import ModelConfig


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return np.asarray(x / np.sqrt(variance + eps) * weight, dtype=np.float32)


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, ...]:
    """cos/sin of shape [len, head_dim], the frequencies repeated for both halves (HF)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(positions.astype(np.float64), inv_freq)  # [len, head_dim / 2]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [heads, len, head_dim]."""
    return np.asarray(x * cos[None] + rotate_half(x) * sin[None], dtype=np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / (1.0 + np.exp(-x)), dtype=np.float32)


def _linear(x: np.ndarray, weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    """HF linear: y = x @ W.T (+ b); W is [out_features, in_features]."""
    y = x @ weights[name + ".weight"].T
    bias = weights.get(name + ".bias")
    return np.asarray(y if bias is None else y + bias, dtype=np.float32)


def attention(
    x: np.ndarray, config: ModelConfig, weights: dict[str, np.ndarray], prefix: str
) -> np.ndarray:
    n, d = x.shape[0], config.head_dim
    q = _linear(x, weights, prefix + "q_proj").reshape(n, config.num_heads, d).transpose(1, 0, 2)
    k = _linear(x, weights, prefix + "k_proj").reshape(n, config.num_kv_heads, d).transpose(1, 0, 2)
    v = _linear(x, weights, prefix + "v_proj").reshape(n, config.num_kv_heads, d).transpose(1, 0, 2)
    cos, sin = rope_cos_sin(np.arange(n), d, config.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    group = config.num_heads // config.num_kv_heads
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)  # GQA: share KV heads
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)  # [heads, n, n]
    scores = np.where(np.tril(np.ones((n, n), dtype=bool))[None], scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(1, 0, 2).reshape(n, config.num_heads * d)
    return _linear(out, weights, prefix + "o_proj")


def mlp(x: np.ndarray, weights: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    gate = _linear(x, weights, prefix + "gate_proj")
    up = _linear(x, weights, prefix + "up_proj")
    return _linear(silu(gate) * up, weights, prefix + "down_proj")


def reference_logits_from(
    config: ModelConfig, weights: dict[str, np.ndarray], token_ids: list[int]
) -> np.ndarray:
    """Logits [len(token_ids), vocab] for every position of one sequence."""
    x = weights["model.embed_tokens.weight"][np.asarray(token_ids)].astype(np.float32)
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, weights[p + "input_layernorm.weight"], config.rms_norm_eps)
        x = x + attention(h, config, weights, p + "self_attn.")
        h = rms_norm(x, weights[p + "post_attention_layernorm.weight"], config.rms_norm_eps)
        x = x + mlp(h, weights, p + "mlp.")
    x = rms_norm(x, weights["model.norm.weight"], config.rms_norm_eps)
    head = weights.get("lm_head.weight")
    if config.tie_word_embeddings or head is None:
        head = weights["model.embed_tokens.weight"]
    return np.asarray(x @ head.T, dtype=np.float32)


def reference_logits(model: LoadedModel, token_ids: list[int]) -> np.ndarray:
    return reference_logits_from(model.config, model.weights, token_ids)


def reference_greedy(model: LoadedModel, token_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decode by full recomputation; stops after an end-of-sequence token."""
    ids = list(token_ids)
    new: list[int] = []
    stop = set(model.tokenizer.eos_token_ids) | set(model.config.eos_token_ids)
    for _ in range(max_new_tokens):
        next_id = int(np.argmax(reference_logits(model, ids)[-1]))
        new.append(next_id)
        ids.append(next_id)
        if next_id in stop:
            break
    return new
