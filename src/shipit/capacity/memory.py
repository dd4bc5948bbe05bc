"""VRAM budget of one replica, the way vLLM's start-up profiler divides a GPU.

``kv_pool = total * gpu_memory_utilization - weights - activation_peak - non_torch - cuda_graphs``
per GPU, then the sequences that pool holds at a context length, whether the configuration
fits, and what to change when it does not. The activation peak is a function of
``max_num_batched_tokens`` (the profiler runs a batch that size), never a constant.
Pure: no IO, no clock.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from shipit.capacity.architecture import (
    kv_bytes_for_context,
    kv_bytes_per_token,
    weight_bytes,
)
from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
from shipit.capacity.deployment import Deployment, valid_tp_degrees
from shipit.capacity.records import GIB, GpuSpec, ModelSpec

ACTIVATION_BYTES = 2.0
LOGIT_BYTES = 4.0


@dataclass(frozen=True, slots=True)
class VramPlan:
    """Memory per GPU of one replica. ``*_bytes`` are per GPU unless named ``_total``."""

    model_id: str
    gpu_id: str
    tp: int
    dtype: str
    kv_dtype_bytes: float
    gpu_total_bytes: float
    budget_bytes: float
    weight_bytes: float
    weight_bytes_total: float
    kv_bytes_per_token: float
    kv_bytes_per_token_total: float
    activation_peak_bytes: float
    non_torch_bytes: float
    cuda_graph_bytes: float
    kv_pool_bytes: float
    kv_pool_tokens: int
    context_tokens: int
    max_concurrent_seqs: int
    fits: bool
    reason: str
    suggestions: tuple[str, ...] = ()


def activation_peak_bytes(
    model: ModelSpec,
    *,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> float:
    """Peak activation bytes of a profiling forward pass of ``max_num_batched_tokens`` tokens.

    Per token: a few hidden-size buffers (residual, normed input, attention output), the QKV
    projection output and the MLP's gate/up/act buffers (their share on this rank), plus
    the sampler's fp32 logits for up to ``max_num_seqs`` sequences.
    """
    h = model.hidden_size
    qkv = (model.num_heads + 2 * model.num_kv_heads) * model.head_dim / tp
    if model.moe is not None:
        k = model.moe.experts_per_token
        mlp = k * (3 * model.moe.moe_intermediate_size / tp + h)
    else:
        mlp = 3 * model.intermediate_size / tp
    per_token = (4 * h + qkv + mlp) * ACTIVATION_BYTES
    seqs = min(max_num_seqs, max_num_batched_tokens)
    logits = seqs * model.vocab_size * LOGIT_BYTES * calibration.sampler_logit_copies
    return max_num_batched_tokens * per_token + logits


def _round_up(tokens: int, block: int) -> int:
    return -(-tokens // block) * block


def _core(d: Deployment, context_tokens: int, cal: Calibration) -> VramPlan:
    m, g = d.model, d.gpu
    total = float(g.memory_bytes)
    budget = total * d.gpu_memory_utilization
    w_total = weight_bytes(m, d.weights)
    w = w_total / d.tp
    act = activation_peak_bytes(
        m,
        tp=d.tp,
        max_num_batched_tokens=d.max_num_batched_tokens,
        max_num_seqs=d.max_num_seqs,
        calibration=cal,
    )
    non_torch = cal.non_torch_bytes + (cal.non_torch_per_extra_rank_bytes if d.tp > 1 else 0.0)
    pool = budget - w - act - non_torch - cal.cuda_graph_bytes
    kv_tok = kv_bytes_per_token(m, d.kv_element_bytes, tp=d.tp)
    per_seq = kv_bytes_for_context(
        m, d.kv_element_bytes, _round_up(context_tokens, cal.kv_block_tokens), tp=d.tp
    )
    seqs = max(0, math.floor(pool / per_seq)) if pool > 0 else 0
    longest = kv_bytes_for_context(
        m, d.kv_element_bytes, _round_up(d.context_limit, cal.kv_block_tokens), tp=d.tp
    )
    fits = pool > 0 and longest <= pool
    return VramPlan(
        model_id=m.id,
        gpu_id=g.id,
        tp=d.tp,
        dtype=d.weights.id,
        kv_dtype_bytes=d.kv_element_bytes,
        gpu_total_bytes=total,
        budget_bytes=budget,
        weight_bytes=w,
        weight_bytes_total=w_total,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_token_total=kv_bytes_per_token(m, d.kv_element_bytes, tp=1),
        activation_peak_bytes=act,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=cal.cuda_graph_bytes,
        kv_pool_bytes=max(pool, 0.0),
        kv_pool_tokens=max(0, math.floor(pool / kv_tok)) if pool > 0 else 0,
        context_tokens=context_tokens,
        max_concurrent_seqs=min(seqs, d.max_num_seqs),
        fits=fits,
        reason=_reason(d, pool, longest, seqs, context_tokens),
    )


def _gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB"


def _reason(d: Deployment, pool: float, longest: float, seqs: int, ctx: int) -> str:
    if pool <= 0:
        return f"does not fit: weights and overheads exceed the budget by {_gib(-pool)} per GPU"
    if longest > pool:
        return (
            f"does not fit: one {d.context_limit}-token sequence needs {_gib(longest)} "
            f"of KV cache but the pool is {_gib(pool)} per GPU"
        )
    capped = " (capped by max_num_seqs)" if seqs > d.max_num_seqs else ""
    return (
        f"fits: {_gib(pool)} KV pool per GPU holds {min(seqs, d.max_num_seqs)} sequences "
        f"of {ctx} tokens{capped}"
    )


def plan_vram(
    d: Deployment,
    *,
    context_tokens: int | None = None,
    other_gpus: tuple[GpuSpec, ...] = (),
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> VramPlan:
    """Memory plan at ``context_tokens`` per sequence (default: ``max_model_len``).

    When it does not fit, ``suggestions`` lists concrete changes that do, each checked by
    re-planning: a shorter context, FP8 KV cache, more tensor parallelism, a lower-precision
    weight format, or another GPU from ``other_gpus``.
    """
    ctx = context_tokens or d.context_limit
    plan = _core(d, ctx, calibration)
    if plan.fits and plan.max_concurrent_seqs >= 1:
        return plan
    return dataclasses.replace(plan, suggestions=_suggest(d, plan, other_gpus, calibration))


def _fits(d: Deployment, cal: Calibration) -> bool:
    return _core(d, d.context_limit, cal).fits


def _suggest(
    d: Deployment, plan: VramPlan, other_gpus: tuple[GpuSpec, ...], cal: Calibration
) -> tuple[str, ...]:
    out: list[str] = []
    if plan.kv_pool_bytes > 0:
        tokens = plan.kv_pool_tokens // 1024 * 1024
        if tokens >= 1024:
            out.append(f"--max-model-len {tokens} (the longest context the pool holds)")
    if d.kv_element_bytes > 1 and _fits(dataclasses.replace(d, kv_dtype="fp8"), cal):
        out.append("--kv-dtype fp8 (halves KV bytes per token)")
    for tp in valid_tp_degrees(d.model, d.gpu):
        if tp > d.tp and _fits(dataclasses.replace(d, tp=tp), cal):
            out.append(f"--tp {tp} (splits weights and KV heads over {tp} GPUs)")
            break
    for dt in ("fp8", "int4-awq"):
        if d.weights.bytes_per_param > 1.0 / (1 if dt == "fp8" else 2) and _fits(
            dataclasses.replace(d, dtype=dt), cal
        ):
            out.append(f"--dtype {dt} (smaller weights; check quality on your evals)")
            break
    for g in other_gpus:
        if (
            g.id != d.gpu.id
            and d.tp in valid_tp_degrees(d.model, g)
            and _fits(dataclasses.replace(d, gpu=g), cal)
        ):
            out.append(f"--gpu {g.id} ({g.memory_gib:g} GiB per GPU)")
    return tuple(out)
