"""The Llama forward pass in numpy (float32) over a paged KV cache.

One call computes a whole engine step: the new tokens of every scheduled sequence are
concatenated into one matrix, so each projection is one BLAS call for the batch. Attention
reads keys and values through each sequence's block table; decoding sequences (one new
token each) are attended together in one padded, masked batch, prefill chunks one by one.
LoRA deltas are added per adapter group, so requests for different adapters share a step.

It owns the arithmetic only: which tokens run, and where their K/V live, is decided by the
scheduler and block manager.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shipit.engine.lora_files import LoraAdapter
from shipit.engine.model_config import ModelConfig

# float32 by construction; numpy's stubs widen mixed arithmetic, so the alias stays loose.
F32 = npt.NDArray[Any]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ForwardItem:
    """New tokens of one sequence for this step."""

    request_id: str
    token_ids: Sequence[int]
    start_pos: int  # tokens of this sequence already in the KV cache
    block_table: Sequence[int]
    need_logits: bool = True  # logits of the last token are wanted (a token is sampled)
    lora: LoraAdapter | None = None


class PagedKVCache:
    """K and V for every layer as ``[num_blocks * block_size, kv_heads, head_dim]`` arrays."""

    def __init__(self, config: ModelConfig, *, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (config.num_layers, num_blocks * block_size, config.num_kv_heads, config.head_dim)
        self.k = _zeros(shape)
        self.v = _zeros(shape)

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes)

    def slots(self, block_table: Sequence[int], start: int, stop: int) -> I64:
        """Flat slot index of positions ``[start, stop)`` of a sequence."""
        pos = np.arange(start, stop, dtype=np.int64)
        table = np.asarray(block_table, dtype=np.int64)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size


def _zeros(shape: tuple[int, ...]) -> F32:
    """A zeroed float32 array whose pages the kernel supplies on first write.

    Not ``np.zeros``: numpy asks for transparent huge pages on large arrays, and the first
    write into each 2 MiB page then zeroes (and may compact memory for) all of it, which made
    a fresh replica's first forward pass several times slower than the next. The KV cache is
    written a few blocks at a time, so ordinary pages cost only what is used."""
    nbytes = math.prod(shape) * 4
    if nbytes == 0:
        return np.zeros(shape, dtype=np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(shape)


def _rms_norm(x: F32, weight: F32, eps: float) -> F32:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * weight


def _silu(x: F32) -> F32:
    return x / (1.0 + np.exp(-x))


def _t(w: F32) -> F32:
    """``[out, in]`` -> contiguous ``[in, out]``: ``x @ w`` then streams rows, which
    OpenBLAS does measurably faster than a transposed view at batch sizes near one."""
    return np.ascontiguousarray(w.T)


def prepare_weights(config: ModelConfig, weights: Mapping[str, F32]) -> dict[str, F32]:
    """Hugging Face weights in the layout the forward pass reads: projections transposed to
    ``[in, out]`` and fused where it saves BLAS calls (q/k/v, gate/up), the tied (or separate)
    LM head transposed. Every array is a new C-contiguous float32 copy, so nothing keeps the
    source file in use. The replica caches this layout on disk (``engine.prepared``)."""
    out: dict[str, F32] = {
        "embed": np.array(weights["model.embed_tokens.weight"], dtype=np.float32),
        "lm_head": _t(
            weights["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]
        ),
        "final_norm": np.array(weights["model.norm.weight"], dtype=np.float32),
    }
    for i in range(config.num_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        out[q + "input_norm"] = np.array(weights[p + "input_layernorm.weight"], np.float32)
        out[q + "post_norm"] = np.array(weights[p + "post_attention_layernorm.weight"], np.float32)
        out[q + "qkv"] = _t(
            np.concatenate([weights[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        )
        if config.attention_bias:
            out[q + "qkv_bias"] = np.concatenate(
                [weights[p + f"self_attn.{n}_proj.bias"] for n in "qkv"]
            ).astype(np.float32)
        out[q + "o"] = _t(weights[p + "self_attn.o_proj.weight"])
        gate, up = weights[p + "mlp.gate_proj.weight"], weights[p + "mlp.up_proj.weight"]
        out[q + "gate_up"] = _t(np.concatenate([gate, up], axis=0))
        out[q + "down"] = _t(weights[p + "mlp.down_proj.weight"])
    return out


def prepared_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every array of the prepared layout with its shape (a cached copy is checked against it)."""
    h, hd = config.hidden_size, config.head_dim
    q, kv, inter = config.num_heads * hd, config.num_kv_heads * hd, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embed": (config.vocab_size, h),
        "lm_head": (h, config.vocab_size),
        "final_norm": (h,),
    }
    for i in range(config.num_layers):
        p = f"layers.{i}."
        shapes |= {
            p + "input_norm": (h,),
            p + "post_norm": (h,),
            p + "qkv": (h, q + 2 * kv),
            p + "o": (q, h),
            p + "gate_up": (h, 2 * inter),
            p + "down": (inter, h),
        }
        if config.attention_bias:
            shapes[p + "qkv_bias"] = (q + 2 * kv,)
    return shapes


class _Layer:
    """One decoder layer's prepared weights (``[in, out]``, q/k/v and gate/up fused)."""

    def __init__(self, w: Mapping[str, F32], i: int, config: ModelConfig) -> None:
        p = f"layers.{i}."
        self.input_norm = w[p + "input_norm"]
        self.post_norm = w[p + "post_norm"]
        self.qkv = w[p + "qkv"]
        self.qkv_bias: F32 | None = w[p + "qkv_bias"] if config.attention_bias else None
        self.o = w[p + "o"]
        self.gate_up = w[p + "gate_up"]
        self.down = w[p + "down"]
        self.q_dim = config.num_heads * config.head_dim
        self.kv_dim = config.num_kv_heads * config.head_dim
        self.intermediate = config.intermediate_size


# Where each LoRA module's output lands inside a fused projection: (fused, offset attr).
_FUSED_SLICES = {
    "q_proj": "qkv",
    "k_proj": "qkv",
    "v_proj": "qkv",
    "gate_proj": "gate_up",
    "up_proj": "gate_up",
    "o_proj": "o",
    "down_proj": "down",
}


class LlamaModel:
    def __init__(self, config: ModelConfig, weights: Mapping[str, F32]) -> None:
        """From Hugging Face weights (copied into the prepared layout)."""
        self._init(config, prepare_weights(config, weights))

    @classmethod
    def from_prepared(cls, config: ModelConfig, prepared: Mapping[str, F32]) -> LlamaModel:
        """From weights already in the prepared layout (used as they are, e.g. memory-mapped)."""
        model = cls.__new__(cls)
        model._init(config, prepared)
        return model

    def _init(self, config: ModelConfig, prepared: Mapping[str, F32]) -> None:
        self.config = config
        self.embed = prepared["embed"]
        self.lm_head = prepared["lm_head"]
        self.final_norm = prepared["final_norm"]
        self.layers = [_Layer(prepared, i, config) for i in range(config.num_layers)]
        self._rope_cache = np.zeros((0, config.head_dim), dtype=np.float32)
        self._sin_cache = self._rope_cache

    # ----- rotary embedding ------------------------------------------------------------
    def _rope(self, positions: I64) -> tuple[F32, F32]:
        need = int(positions.max()) + 1 if positions.size else 0
        if need > self._rope_cache.shape[0]:
            size = max(need, 2 * self._rope_cache.shape[0], 256)
            hd = self.config.head_dim
            inv_freq = 1.0 / (
                self.config.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
            )
            freqs = np.outer(np.arange(size, dtype=np.float64), inv_freq)
            emb = np.concatenate([freqs, freqs], axis=-1)
            self._rope_cache = np.cos(emb).astype(np.float32)
            self._sin_cache = np.sin(emb).astype(np.float32)
        return self._rope_cache[positions], self._sin_cache[positions]

    @staticmethod
    def _apply_rope(x: F32, cos: F32, sin: F32) -> F32:
        """HF layout: rotate the two halves of each head. ``x``: [T, heads, head_dim]."""
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos[:, None, :] + rotated * sin[:, None, :]

    # ----- LoRA ------------------------------------------------------------------------
    def _add_lora(
        self, out: F32, h: F32, layer: int, fused: str, groups: list[tuple[LoraAdapter, I64]]
    ) -> None:
        for adapter, rows in groups:
            for module, target in _FUSED_SLICES.items():
                if target != fused or (layer, module) not in adapter.weights:
                    continue
                a, b = adapter.weights[(layer, module)]
                start = self._lora_offset(layer, module)
                delta = (h[rows] @ a.T) @ b.T
                out[rows, start : start + b.shape[0]] += adapter.scaling * delta

    def _lora_offset(self, layer: int, module: str) -> int:
        lay = self.layers[layer]
        return {
            "q_proj": 0,
            "k_proj": lay.q_dim,
            "v_proj": lay.q_dim + lay.kv_dim,
            "gate_proj": 0,
            "up_proj": lay.intermediate,
        }.get(module, 0)

    # ----- forward -----------------------------------------------------------------------
    def forward(self, items: Sequence[ForwardItem], cache: PagedKVCache) -> F32:
        """Run one step; return logits ``[items needing logits, vocab]`` in item order."""
        cfg = self.config
        tokens = np.fromiter((t for it in items for t in it.token_ids), dtype=np.int64)
        lengths = [len(it.token_ids) for it in items]
        positions = np.concatenate(
            [
                np.arange(it.start_pos, it.start_pos + n, dtype=np.int64)
                for it, n in zip(items, lengths, strict=True)
            ]
        )
        slots = np.concatenate(
            [
                cache.slots(it.block_table, it.start_pos, it.start_pos + n)
                for it, n in zip(items, lengths, strict=True)
            ]
        )
        cos, sin = self._rope(positions)
        groups = self._lora_groups(items, lengths)
        attn = _AttentionPlan(items, lengths, cache)
        x = self.embed[tokens]
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.input_norm, cfg.rms_norm_eps)
            qkv = h @ layer.qkv
            if layer.qkv_bias is not None:
                qkv += layer.qkv_bias
            if groups:
                self._add_lora(qkv, h, i, "qkv", groups)
            q = qkv[:, : layer.q_dim].reshape(-1, cfg.num_heads, cfg.head_dim)
            k = qkv[:, layer.q_dim : layer.q_dim + layer.kv_dim].reshape(
                -1, cfg.num_kv_heads, cfg.head_dim
            )
            v = qkv[:, layer.q_dim + layer.kv_dim :].reshape(-1, cfg.num_kv_heads, cfg.head_dim)
            q = self._apply_rope(q, cos, sin)
            cache.k[i][slots] = self._apply_rope(k, cos, sin)
            cache.v[i][slots] = v
            ctx = attn.run(q, cache.k[i], cache.v[i], cfg)
            o = ctx @ layer.o
            if groups:
                self._add_lora(o, ctx, i, "o", groups)
            x = x + o
            h = _rms_norm(x, layer.post_norm, cfg.rms_norm_eps)
            gu = h @ layer.gate_up
            if groups:
                self._add_lora(gu, h, i, "gate_up", groups)
            act = _silu(gu[:, : layer.intermediate]) * gu[:, layer.intermediate :]
            down = act @ layer.down
            if groups:
                self._add_lora(down, act, i, "down", groups)
            x = x + down
        last = np.cumsum(lengths) - 1
        wanted = last[[it.need_logits for it in items]]
        h = _rms_norm(x[wanted], self.final_norm, cfg.rms_norm_eps)
        return h @ self.lm_head

    @staticmethod
    def _lora_groups(
        items: Sequence[ForwardItem], lengths: list[int]
    ) -> list[tuple[LoraAdapter, I64]]:
        rows: dict[int, tuple[LoraAdapter, list[int]]] = {}
        offset = 0
        for it, n in zip(items, lengths, strict=True):
            if it.lora is not None:
                rows.setdefault(id(it.lora), (it.lora, []))[1].extend(range(offset, offset + n))
            offset += n
        return [(a, np.asarray(r, dtype=np.int64)) for a, r in rows.values()]


class _AttentionPlan:
    """Index arrays for one step's attention, built once and reused by every layer."""

    def __init__(self, items: Sequence[ForwardItem], lengths: list[int], cache: PagedKVCache):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        decode = [j for j, n in enumerate(lengths) if n == 1]
        self.prefill = [
            (int(offsets[j]), n, it.start_pos, cache.slots(it.block_table, 0, it.start_pos + n))
            for j, (it, n) in enumerate(zip(items, lengths, strict=True))
            if n != 1
        ]
        self.decode_rows = offsets[decode]
        self.decode_slots: I64 | None = None
        self.decode_mask: F32 | None = None
        if decode:
            ctx_lens = [items[j].start_pos + 1 for j in decode]
            max_ctx = max(ctx_lens)
            slots = np.zeros((len(decode), max_ctx), dtype=np.int64)
            mask = np.full((len(decode), max_ctx), -np.inf, dtype=np.float32)
            for r, (j, c) in enumerate(zip(decode, ctx_lens, strict=True)):
                slots[r, :c] = cache.slots(items[j].block_table, 0, c)
                mask[r, :c] = 0.0
            self.decode_slots, self.decode_mask = slots, mask

    def run(self, q: F32, k_cache: F32, v_cache: F32, cfg: ModelConfig) -> F32:
        """Attention output ``[T, heads * head_dim]`` for queries ``q`` ``[T, heads, hd]``."""
        out = np.empty((q.shape[0], cfg.num_heads * cfg.head_dim), dtype=np.float32)
        group = cfg.num_heads // cfg.num_kv_heads
        scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        if self.decode_slots is not None and self.decode_mask is not None:
            b = len(self.decode_rows)
            qd = q[self.decode_rows].reshape(b, cfg.num_kv_heads, group, cfg.head_dim)
            kd = k_cache[self.decode_slots].transpose(0, 2, 3, 1)  # [B, kvh, hd, T]
            vd = v_cache[self.decode_slots].transpose(0, 2, 1, 3)  # [B, kvh, T, hd]
            scores = (qd @ kd) * scale + self.decode_mask[:, None, None, :]
            out[self.decode_rows] = (_softmax(scores) @ vd).reshape(b, -1)
        for start, n, past, slots in self.prefill:
            qp = q[start : start + n].reshape(n, cfg.num_kv_heads, group, cfg.head_dim)
            kp = k_cache[slots].transpose(1, 2, 0)  # [kvh, hd, T]
            vp = v_cache[slots].transpose(1, 0, 2)  # [kvh, T, hd]
            scores = (qp.transpose(1, 2, 0, 3) @ kp[:, None]) * scale  # [kvh, g, n, T]
            causal = np.arange(past + n)[None, :] > (past + np.arange(n))[:, None]
            scores[..., causal] = -np.inf
            ctx = _softmax(scores) @ vp[:, None]  # [kvh, g, n, hd]
            out[start : start + n] = ctx.transpose(2, 0, 1, 3).reshape(n, -1)
        return out


def _softmax(x: F32) -> F32:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x
