"""The simulated accelerator (``shipit.engine.simulated``): real scheduler and block manager,
step times from the planner's roofline, KV capacity from its VRAM plan. A fake ``sleep``
records the modelled durations, so nothing here waits."""

from __future__ import annotations

import numpy as np
import pytest

from shipit.capacity import Deployment, load_catalog, plan_vram
from shipit.core.errors import InvalidRequestError
from shipit.engine.engine import EngineConfig
from shipit.engine.model import ForwardItem
from shipit.engine.sampling import SamplingParams
from shipit.engine.simulated import (
    SimTokenizer,
    SimulatedExecutor,
    SimulationSpec,
    StepShape,
    build_simulated_engine,
    roofline_step_time,
)

CONFIG = EngineConfig(max_num_seqs=8, max_num_batched_tokens=256)


def item(rid: str, n: int, start: int, *, logits: bool = True) -> ForwardItem:
    return ForwardItem(rid, list(range(n)), start, [0], need_logits=logits)


def test_step_shape_splits_prefill_from_decode() -> None:
    shape = StepShape.of([item("a", 1, 100), item("b", 1, 140), item("c", 64, 0)])
    assert (shape.decode_seqs, shape.decode_context_tokens) == (2, 112)  # mean 120, per 16
    assert (shape.prefill_tokens, shape.prefill_seqs, shape.prefill_context_tokens) == (64, 1, 32)


class Clock:
    """A clock that only the executor's sleeps and the test's ``host`` calls move."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def host(self, s: float) -> None:
        self.now += s


def test_executor_sleeps_the_modelled_time_and_peaks_a_non_eos_token() -> None:
    clock = Clock()
    slept = clock.slept
    ex = SimulatedExecutor(
        lambda s: 0.001 * (s.decode_seqs + s.prefill_tokens),
        vocab_size=64,
        sleep=clock.sleep,
        clock=clock,
    )
    logits = ex.execute([item("a", 1, 10), item("b", 5, 0, logits=False), item("c", 1, 3)])
    assert slept == [pytest.approx(0.007)] and ex.num_steps == 1
    assert logits.shape == (2, 64)
    tokens = np.argmax(logits, axis=1)
    assert all(t >= 3 for t in tokens)  # never <unk>, BOS or EOS


def test_host_work_between_steps_runs_under_the_previous_step() -> None:
    clock = Clock()
    ex = SimulatedExecutor(lambda s: 0.010, vocab_size=64, sleep=clock.sleep, clock=clock)
    batch = [item("a", 1, 10)]
    ex.execute(batch)  # 100.000 -> 100.010
    clock.host(0.002)  # scheduling, sampling, streaming: 2 ms, under the 10 ms step
    ex.execute(batch)  # started at 100.010, when the previous step ended
    assert clock.now == pytest.approx(100.020) and ex.hidden_s == pytest.approx(0.002)
    clock.host(0.011)  # slower than the step: nothing to hide it under
    ex.execute(batch)
    assert clock.now == pytest.approx(100.041)
    clock.host(5.0)  # idle until a request came: the step starts when the host calls
    ex.execute(batch)
    assert clock.now == pytest.approx(105.051)
    assert clock.slept == pytest.approx([0.010, 0.008, 0.010, 0.010])
    assert ex.busy_s == pytest.approx(0.040) and ex.hidden_s == pytest.approx(0.002)


def test_a_late_wake_up_is_made_up_in_the_next_step() -> None:
    clock = Clock()

    asked: list[float] = []

    def oversleep(s: float) -> None:
        asked.append(s)
        clock.host(s + 0.001)  # the OS wakes the thread 1 ms late

    ex = SimulatedExecutor(lambda s: 0.010, vocab_size=64, sleep=oversleep, clock=clock)
    for _ in range(3):
        ex.execute([item("a", 1, 10)])
    # Steps end at 100.010, .020, .030 on the model's clock; each wake-up is 1 ms late.
    assert clock.now == pytest.approx(100.031)
    assert asked == pytest.approx([0.010, 0.009, 0.009])


def test_parse_spec() -> None:
    assert SimulationSpec.parse("H100:llama-3.1-70b:tp4") == SimulationSpec(
        "H100", "llama-3.1-70b", 4
    )
    assert SimulationSpec.parse("l4:llama-3.1-8b").tp == 1
    for bad in ("H100", "H100:", "H100:m:four", "a:b:c:d"):
        with pytest.raises(InvalidRequestError) as err:
            SimulationSpec.parse(bad)
        assert err.value.field == "simulate"


def test_tokenizer_is_deterministic_and_one_token_per_word() -> None:
    tok = SimTokenizer()
    ids = tok.encode("the cat sat on the mat")
    assert len(ids) == 6 and ids[0] == ids[4] and ids == tok.encode("the  cat sat on the mat")
    assert all(3 <= i < tok.vocab_size for i in ids)
    assert tok.decode([5, 6]) == " w5 w6" and tok.decode([2, 5]) == " w5"
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_engine_has_the_gpus_kv_capacity_and_runs_requests_on_the_modelled_clock() -> None:
    slept: list[float] = []
    engine = build_simulated_engine("H100:llama-3.1-8b", CONFIG, sleep=slept.append)
    catalog = load_catalog()
    d = Deployment(
        model=catalog.model("llama-3.1-8b"),
        gpu=catalog.gpu("H100"),
        max_num_seqs=8,
        max_num_batched_tokens=256,
    )
    assert engine.blocks.num_blocks == plan_vram(d).kv_pool_tokens // 16
    params = SamplingParams(max_tokens=20, temperature=0)
    results = engine.generate(["one two three four"] * 3, params)
    assert all(len(ids) == 20 for ids, _ in results)  # never EOS: runs to max_tokens
    assert len(slept) == 20 and all(s > 0 for s in slept)
    # A decode step of three sequences on an 8B model on an H100: memory-bound, ~10 ms.
    assert 0.003 < slept[-1] < 0.05


def test_step_time_grows_with_the_batch_and_is_memoised() -> None:
    catalog = load_catalog()
    d = Deployment(model=catalog.model("llama-3.1-70b"), gpu=catalog.gpu("H100"), tp=4)
    model = roofline_step_time(d)
    small = model(StepShape(0, 0, 0, 1, 512))
    big = model(StepShape(0, 0, 0, 64, 512))
    prefill = model(StepShape(2048, 1, 1024, 0, 0))
    assert small < big and small < prefill
    assert model(StepShape(0, 0, 0, 1, 512)) == small


def test_a_model_that_does_not_fit_is_refused_with_the_planners_reason() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_simulated_engine("L4:llama-3.1-70b", CONFIG, sleep=lambda s: None)
    assert err.value.field == "simulate" and "does not fit" in err.value.message
