"""Latency and throughput of one replica for a workload: TTFT, TPOT, tokens per second.

Built on the roofline iteration time (``roofline``) and the VRAM plan (``memory``): at
concurrency ``C`` (capped by the KV pool), a cycle in which ``C`` requests each produce ``O``
tokens takes ``O`` decode iterations at batch ``C`` plus the prefill of ``C`` prompts (chunked by
``max_num_batched_tokens``). Throughput is ``C * O / cycle``; TPOT is a decode iteration plus
the other requests' prefills spread over ``O`` tokens; TTFT is the prompt's own chunks run
alongside ``C - 1`` decodes plus half an iteration of waiting. Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
from shipit.capacity.deployment import Deployment, valid_tp_degrees
from shipit.capacity.memory import plan_vram
from shipit.capacity.roofline import StepTime, iteration_time
from shipit.core.errors import CapacityError, InvalidRequestError


@dataclass(frozen=True, slots=True)
class PerfEstimate:
    """One replica at one operating point. Rates are per replica unless ``_per_gpu``."""

    label: str
    model_id: str
    gpu_id: str
    tp: int
    dtype: str
    input_len: int
    output_len: int
    concurrency: int
    max_concurrency: int
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    decode_step_ms: float
    prefill_ms_per_request: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    input_tokens_per_s: float
    requests_per_s: float
    bound: str
    reason: str


def _prefill(d: Deployment, n: int, new: int, prior: int, cal: Calibration) -> StepTime:
    total = n * new
    chunks = max(1, math.ceil(total / d.max_num_batched_tokens))
    return iteration_time(
        d,
        prefill_tokens=total,
        prefill_seqs=n,
        prefill_context_tokens=prior + new / 2,
        decode_seqs=0,
        context_tokens=0,
        chunks=chunks,
        calibration=cal,
    )


def _ttft_s(
    d: Deployment, new: int, prior: int, running: int, ctx: float, cal: Calibration
) -> float:
    """The prompt's chunks, each sharing an iteration with the ``running`` decodes."""
    budget = max(1, d.max_num_batched_tokens - running)
    chunks = max(1, math.ceil(new / budget))
    t = iteration_time(
        d,
        prefill_tokens=new,
        prefill_seqs=1,
        prefill_context_tokens=prior + new / 2,
        decode_seqs=running * chunks,
        context_tokens=ctx,
        chunks=chunks,
        calibration=cal,
    ).total_s
    wait = iteration_time(
        d,
        prefill_tokens=0,
        prefill_seqs=0,
        prefill_context_tokens=0,
        decode_seqs=max(running, 1),
        context_tokens=ctx,
        calibration=cal,
    ).total_s
    return t + 0.5 * wait if running else t


def max_concurrency(
    d: Deployment, input_len: int, output_len: int, calibration: Calibration = DEFAULT_CALIBRATION
) -> int:
    """Sequences of ``input_len + output_len`` tokens the KV pool (and max_num_seqs) allows."""
    return plan_vram(
        d, context_tokens=input_len + output_len, calibration=calibration
    ).max_concurrent_seqs


def _check_and_cap(d: Deployment, input_len: int, output_len: int, calibration: Calibration) -> int:
    """Validate the lengths and return the concurrency the KV pool allows (at least 1)."""
    if input_len < 1 or output_len < 1:
        raise InvalidRequestError("input_len and output_len must be at least 1", field="input_len")
    if input_len + output_len > d.context_limit:
        raise InvalidRequestError(
            f"input_len + output_len = {input_len + output_len} exceeds max_model_len "
            f"{d.context_limit}; raise --max-model-len (model limit {d.model.max_context})",
            field="input_len",
        )
    cap = max_concurrency(d, input_len, output_len, calibration)
    if cap < 1:
        plan = plan_vram(d, context_tokens=input_len + output_len, calibration=calibration)
        raise CapacityError(f"{d.label()}: {plan.reason}")
    return cap


def estimate_perf(
    d: Deployment,
    *,
    input_len: int,
    output_len: int,
    concurrency: int | None = None,
    prefix_hit_rate: float = 0.0,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> PerfEstimate:
    """TTFT, TPOT and throughput at ``concurrency`` (default: as many as the KV pool holds)."""
    cap = _check_and_cap(d, input_len, output_len, calibration)
    c = min(concurrency or cap, cap)
    new = max(1, math.ceil(input_len * (1.0 - prefix_hit_rate)))
    prior = input_len - new
    ctx = input_len + output_len / 2
    dec = iteration_time(
        d,
        prefill_tokens=0,
        prefill_seqs=0,
        prefill_context_tokens=0,
        decode_seqs=c,
        context_tokens=ctx,
        calibration=calibration,
    )
    pre_all = _prefill(d, c, new, prior, calibration).total_s
    cycle = output_len * dec.total_s + pre_all
    tpot = dec.total_s + pre_all * (c - 1) / c / output_len
    ttft = _ttft_s(d, new, prior, c - 1, ctx, calibration)
    e2e = ttft + (output_len - 1) * tpot
    out_tps = c * output_len / cycle
    why = _why(d, dec, c, cap, concurrency)
    return PerfEstimate(
        label=d.label(),
        model_id=d.model.id,
        gpu_id=d.gpu.id,
        tp=d.tp,
        dtype=d.weights.id,
        input_len=input_len,
        output_len=output_len,
        concurrency=c,
        max_concurrency=cap,
        ttft_ms=ttft * 1e3,
        tpot_ms=tpot * 1e3,
        e2e_ms=e2e * 1e3,
        decode_step_ms=dec.total_s * 1e3,
        prefill_ms_per_request=pre_all / c * 1e3,
        output_tokens_per_s=out_tps,
        output_tokens_per_s_per_gpu=out_tps / d.tp,
        input_tokens_per_s=c * input_len / cycle,
        requests_per_s=c / cycle,
        bound=dec.bound,
        reason=why,
    )


def _why(d: Deployment, dec: StepTime, c: int, cap: int, asked: int | None) -> str:
    parts = [
        f"decode at batch {c} is {dec.bound}-bound "
        f"(compute {dec.compute_s * 1e3:.2f} ms, memory {dec.memory_s * 1e3:.2f} ms, "
        f"all-reduce {dec.comm_s * 1e3:.2f} ms, overhead {dec.overhead_s * 1e3:.2f} ms)"
    ]
    if asked is not None and asked > cap:
        parts.append(f"concurrency {asked} capped at {cap} by the KV pool / max_num_seqs")
    elif asked is None:
        parts.append(f"concurrency {c} = what the KV pool holds")
    return "; ".join(parts)


def best_throughput_for_gpus(
    d: Deployment,
    *,
    num_gpus: int,
    input_len: int,
    output_len: int,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> float:
    """Most output tokens/s ``num_gpus`` GPUs deliver: best TP degree times replicas that fit.

    Zero when no degree fits. Never lower for more GPUs: every layout of fewer GPUs is
    still available (spare GPUs idle).
    """
    best = 0.0
    for tp in valid_tp_degrees(d.model, d.gpu):
        if tp > num_gpus:
            continue
        candidate = Deployment(
            model=d.model,
            gpu=d.gpu,
            tp=tp,
            dtype=d.dtype,
            kv_dtype=d.kv_dtype,
            max_model_len=d.max_model_len,
            max_num_seqs=d.max_num_seqs,
            max_num_batched_tokens=d.max_num_batched_tokens,
            gpu_memory_utilization=d.gpu_memory_utilization,
        )
        if max_concurrency(candidate, input_len, output_len, calibration) < 1:
            continue
        per = estimate_perf(
            candidate, input_len=input_len, output_len=output_len, calibration=calibration
        ).output_tokens_per_s
        best = max(best, per * (num_gpus // tp))
    return best
