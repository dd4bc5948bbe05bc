"""Roofline time of one engine iteration: compute, memory traffic and tensor-parallel all-reduce.

An iteration (one vLLM ``step``) runs some prefill tokens and some decoding sequences through
the model once. Its time is ``max(FLOPs / achieved FLOP/s, bytes / achieved bandwidth)`` plus
all-reduce time under tensor parallelism plus a fixed per-step overhead. Weights are read once
per iteration (MoE: only the experts the batch's tokens route to); every decoding sequence reads
its KV cache. Pure; the efficiencies come from ``Calibration``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.capacity.architecture import (
    attended_keys,
    attention_flops_per_key,
    expert_bytes,
    kv_bytes_for_context,
    param_counts,
    weight_bytes,
)
from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
from shipit.capacity.deployment import Deployment
from shipit.capacity.records import GpuSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class StepTime:
    """One iteration's time split by what bounds it."""

    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comm_s + self.overhead_s

    @property
    def bound(self) -> str:
        if self.comm_s > max(self.compute_s, self.memory_s):
            return "communication"
        return "compute" if self.compute_s >= self.memory_s else "memory"


def _weight_read_bytes(d: Deployment, tokens: float) -> float:
    """Weight bytes one iteration streams: all but the embedding table, experts by routing."""
    m = d.model
    c = param_counts(m)
    total = weight_bytes(m, d.weights)
    emb_bytes = (
        0.0
        if m.tie_word_embeddings
        else c.embedding * (d.weights.bytes_per_param if d.weights.scope == "all" else 2.0)
    )
    experts = expert_bytes(m, d.weights)
    touched = 1.0
    if m.moe is not None:
        k, e = m.moe.experts_per_token, m.moe.num_experts
        touched = 1.0 - (1.0 - k / e) ** max(tokens, 1.0)
    return total - emb_bytes - experts + experts * touched


def _allreduce_s(d: Deployment, tokens: float, cal: Calibration) -> float:
    if d.tp == 1:
        return 0.0
    payload = tokens * d.model.hidden_size * 2.0
    link = d.gpu.interconnect_bytes_s * cal.interconnect_efficiency
    one = cal.allreduce_latency_s + 2.0 * (d.tp - 1) / d.tp * payload / link
    return 2 * d.model.num_layers * one


def iteration_time(
    d: Deployment,
    *,
    prefill_tokens: int,
    prefill_seqs: int,
    prefill_context_tokens: float,
    decode_seqs: int,
    context_tokens: float,
    chunks: int = 1,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> StepTime:
    """Time for ``chunks`` iterations that together run the given work.

    ``prefill_tokens`` new prompt tokens from ``prefill_seqs`` prompts, each attending to
    ``prefill_context_tokens`` keys on average; ``decode_seqs`` sequences each with
    ``context_tokens`` in their KV cache. Weights are streamed once per chunk.
    """
    m, cal = d.model, calibration
    c = param_counts(m)
    tokens = prefill_tokens + decode_seqs
    body = c.active_matmul - c.lm_head
    flops = 2.0 * body * tokens + 2.0 * c.lm_head * (decode_seqs + prefill_seqs)
    per_key = attention_flops_per_key(m)
    flops += decode_seqs * per_key * attended_keys(m, context_tokens)
    flops += prefill_tokens * per_key * attended_keys(m, prefill_context_tokens)
    kv_elem = d.kv_element_bytes
    per_seq_kv = d.tp * kv_bytes_for_context(m, kv_elem, math.ceil(context_tokens), tp=d.tp)
    kv_read = decode_seqs * per_seq_kv * chunks
    per_chunk_tokens = tokens / max(chunks, 1)
    read = chunks * _weight_read_bytes(d, per_chunk_tokens) + kv_read
    compute_rate = d.tp * d.gpu.peak_flops(d.weights.compute) * cal.compute_efficiency
    bandwidth = d.tp * d.gpu.bandwidth_bytes_s * cal.bandwidth_efficiency
    return StepTime(
        compute_s=flops / compute_rate,
        memory_s=read / bandwidth,
        comm_s=chunks * _allreduce_s(d, per_chunk_tokens, cal),
        overhead_s=chunks * cal.step_overhead_s,
    )


def step_time_s(
    model: ModelSpec,
    gpu: GpuSpec,
    tp: int,
    dtype: str,
    *,
    prefill_tokens: int,
    decode_seqs: int,
    context_tokens: int,
    kv_dtype: str = "auto",
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> float:
    """Roofline seconds for ONE engine iteration of a replica (the simulated replica's clock).

    ``prefill_tokens``: new prompt tokens in this iteration (one prompt chunk attending causally
    to itself, i.e. half its length on average); ``decode_seqs``: sequences generating one token
    each; ``context_tokens``: mean tokens already in each decoding sequence's KV cache.
    Returns ``max(compute, memory) + all-reduce + per-step overhead`` in seconds.
    """
    d = Deployment(model=model, gpu=gpu, tp=tp, dtype=dtype, kv_dtype=kv_dtype)
    return iteration_time(
        d,
        prefill_tokens=prefill_tokens,
        prefill_seqs=1 if prefill_tokens else 0,
        prefill_context_tokens=prefill_tokens / 2,
        decode_seqs=decode_seqs,
        context_tokens=context_tokens,
        calibration=calibration,
    ).total_s
