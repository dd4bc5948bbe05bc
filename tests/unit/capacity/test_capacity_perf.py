"""Roofline performance: monotone in load, memory-bound decode, TP helps, more GPUs never hurt."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipit.capacity import (
    DEFAULT_CALIBRATION,
    Deployment,
    best_throughput_for_gpus,
    estimate_perf,
    load_catalog,
    step_time_s,
    weight_bytes,
    weight_dtype,
)
from shipit.core.errors import CapacityError, InvalidRequestError

CATALOG = load_catalog()
M8, H100 = CATALOG.model("llama-3.1-8b"), CATALOG.gpu("h100-sxm")


def test_batch_one_decode_is_weights_over_bandwidth() -> None:
    t = step_time_s(M8, H100, 1, "bf16", prefill_tokens=0, decode_seqs=1, context_tokens=100)
    cal = DEFAULT_CALIBRATION
    stream = weight_bytes(M8, weight_dtype("bf16")) / (
        H100.bandwidth_bytes_s * cal.bandwidth_efficiency
    )
    assert t == pytest.approx(stream + cal.step_overhead_s, rel=0.1)


@given(seqs=st.integers(1, 512), ctx=st.integers(1, 16000), extra=st.integers(1, 64))
def test_step_time_grows_with_load(seqs: int, ctx: int, extra: int) -> None:
    base = step_time_s(M8, H100, 1, "bf16", prefill_tokens=0, decode_seqs=seqs, context_tokens=ctx)
    assert (
        step_time_s(
            M8, H100, 1, "bf16", prefill_tokens=0, decode_seqs=seqs + extra, context_tokens=ctx
        )
        >= base
    )
    assert (
        step_time_s(
            M8, H100, 1, "bf16", prefill_tokens=0, decode_seqs=seqs, context_tokens=ctx + extra
        )
        >= base
    )
    assert (
        step_time_s(
            M8, H100, 1, "bf16", prefill_tokens=512 * extra, decode_seqs=seqs, context_tokens=ctx
        )
        >= base
    )


def test_prefill_is_compute_bound_and_fp8_faster() -> None:
    bf = step_time_s(M8, H100, 1, "bf16", prefill_tokens=8192, decode_seqs=0, context_tokens=0)
    f8 = step_time_s(M8, H100, 1, "fp8", prefill_tokens=8192, decode_seqs=0, context_tokens=0)
    assert f8 < bf


def test_tensor_parallel_speeds_up_a_large_model() -> None:
    m, g = CATALOG.model("llama-3.1-70b"), CATALOG.gpu("h200")
    t2 = step_time_s(m, g, 2, "bf16", prefill_tokens=0, decode_seqs=8, context_tokens=2000)
    t8 = step_time_s(m, g, 8, "bf16", prefill_tokens=0, decode_seqs=8, context_tokens=2000)
    assert t8 < t2


def test_estimate_caps_concurrency_at_kv_pool() -> None:
    d = Deployment(model=M8, gpu=CATALOG.gpu("l4"), max_model_len=8192, max_num_seqs=1024)
    e = estimate_perf(d, input_len=4000, output_len=4000, concurrency=10_000)
    assert e.concurrency == e.max_concurrency < 10_000
    assert "capped" in e.reason


def test_more_concurrency_more_throughput_and_slower_tokens() -> None:
    d = Deployment(model=M8, gpu=H100, max_model_len=4096)
    lo = estimate_perf(d, input_len=1000, output_len=200, concurrency=4)
    hi = estimate_perf(d, input_len=1000, output_len=200, concurrency=64)
    assert hi.output_tokens_per_s > lo.output_tokens_per_s
    assert hi.tpot_ms > lo.tpot_ms and hi.bound == "memory"
    assert lo.e2e_ms == pytest.approx(lo.ttft_ms + 199 * lo.tpot_ms)


def test_prefix_cache_cuts_ttft() -> None:
    d = Deployment(model=M8, gpu=H100, max_model_len=8192)
    cold = estimate_perf(d, input_len=6000, output_len=100, concurrency=1)
    warm = estimate_perf(d, input_len=6000, output_len=100, concurrency=1, prefix_hit_rate=0.9)
    assert warm.ttft_ms < cold.ttft_ms / 3


def test_errors_for_too_long_and_not_fitting() -> None:
    d = Deployment(model=M8, gpu=H100, max_model_len=2048)
    with pytest.raises(InvalidRequestError, match="max_model_len"):
        estimate_perf(d, input_len=2000, output_len=100)
    big = Deployment(
        model=CATALOG.model("llama-3.1-70b"), gpu=CATALOG.gpu("l4"), max_model_len=4096
    )
    with pytest.raises(CapacityError, match="does not fit"):
        estimate_perf(big, input_len=1000, output_len=100)


@settings(max_examples=40, deadline=None)
@given(
    model=st.sampled_from(["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-32b"]),
    gpu=st.sampled_from(["h100-sxm", "a100-40gb", "l4", "h200"]),
    gpus=st.integers(1, 16),
    more=st.integers(1, 16),
    io=st.sampled_from([(128, 128), (1000, 200), (4000, 500)]),
)
def test_more_gpus_never_lower_throughput(
    model: str, gpu: str, gpus: int, more: int, io: tuple[int, int]
) -> None:
    d = Deployment(model=CATALOG.model(model), gpu=CATALOG.gpu(gpu), max_model_len=8192)
    few = best_throughput_for_gpus(d, num_gpus=gpus, input_len=io[0], output_len=io[1])
    many = best_throughput_for_gpus(d, num_gpus=gpus + more, input_len=io[0], output_len=io[1])
    assert many >= few
