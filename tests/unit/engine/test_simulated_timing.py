"""``engine.sim_timing``: the one step-time function both the ``--simulate`` replica and the
fleet simulator use: step shapes (one bucketing for both), decode runs timed as single steps,
and a ``ReplicaModel`` resolved to the KV blocks and step times the simulated engine gets."""

from __future__ import annotations

import pytest

from shipit.capacity import plan_vram
from shipit.engine.engine import EngineConfig
from shipit.engine.model import ForwardItem
from shipit.engine.sim_timing import ReplicaModel, StepShape, decode_step_ends
from shipit.engine.simulated import SimulatedExecutor, build_simulated_engine


def test_the_executors_shape_is_the_span_shape() -> None:
    items = [
        ForwardItem("a", [1], 100, [0]),
        ForwardItem("b", [1], 141, [0]),
        ForwardItem("c", list(range(64)), 32, [0]),
    ]
    shape = StepShape.of(items)
    assert shape == StepShape.of_spans([(100, 1), (141, 1), (32, 64)])
    assert shape == StepShape(64, 1, 64, 2, 112)  # contexts per 16 tokens: 120 -> 112


@pytest.mark.parametrize(
    ("n", "contexts"), [(1, [0]), (3, [100, 141, 7]), (5, [15, 16, 17, 31, 999])]
)
def test_a_decode_only_shape_from_totals_equals_the_span_shape(n: int, contexts: list[int]) -> None:
    assert len(contexts) == n
    assert StepShape.of_decodes(n, sum(contexts)) == StepShape.of_spans((c, 1) for c in contexts)


def test_decode_run_ends_equal_stepping_one_step_at_a_time() -> None:
    step_time = ReplicaModel().resolve().step_time
    contexts = [500, 37, 1_210]
    ends = decode_step_ends(
        step_time, start_s=2.0, num_seqs=3, total_context_tokens=sum(contexts), steps=70
    )
    t, expected = 2.0, []
    for i in range(70):
        t += step_time(StepShape.of_spans((c + i, 1) for c in contexts))
        expected.append(t)
    assert ends == expected  # the same sums in the same order: bit for bit


def test_a_replica_model_resolves_to_what_the_simulated_engine_gets() -> None:
    config = EngineConfig(max_num_batched_tokens=1024, max_model_len=32_768)
    timing = ReplicaModel(gpu="H100", model="llama-3.1-70b", tp=4, engine=config).resolve()
    d = timing.deployment
    assert (d.tp, d.max_num_batched_tokens, d.max_model_len) == (4, 1024, 32_768)
    assert timing.num_kv_blocks == plan_vram(d).kv_pool_tokens // 16 > 0
    engine = build_simulated_engine("H100:llama-3.1-70b:tp4", config, sleep=lambda s: None)
    assert engine.blocks.num_blocks == timing.num_kv_blocks
    assert engine.max_model_len == timing.max_model_len == 32_768
    assert isinstance(engine.executor, SimulatedExecutor)
    shape = StepShape(512, 1, 256, 8, 1_024)
    assert engine.executor.step_time(shape) == timing.step_time(shape)


def test_a_model_that_does_not_fit_resolves_to_no_blocks() -> None:
    timing = ReplicaModel(gpu="L4", model="llama-3.1-70b").resolve()
    assert timing.num_kv_blocks == 0 and not timing.plan.fits
