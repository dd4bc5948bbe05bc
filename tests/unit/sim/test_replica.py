"""``SimReplica`` steps as the engine does: the same chunks per step (token budget, decodes
first, prefill chunks in priority-then-arrival order, preemption when the KV cache runs out),
hence the same step times, compared with the engine of a ``--simulate`` replica on a fake
clock. No sleeps."""

from __future__ import annotations

import dataclasses

import pytest

from shipit.core.errors import CapacityError, ContextLengthError
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.sampling import SamplingParams
from shipit.engine.sim_timing import ReplicaModel, ReplicaTiming
from shipit.engine.simulated import SimulatedExecutor, build_simulated_engine
from shipit.sim.replica import SimReplica

Job = tuple[float, int, int, int]  # arrival, prompt tokens, output tokens, priority


def timing(config: EngineConfig, num_blocks: int | None = None) -> ReplicaTiming:
    t = ReplicaModel(gpu="H100", model="llama-3.1-8b", engine=config).resolve()
    return t if num_blocks is None else dataclasses.replace(t, num_kv_blocks=num_blocks)


def engine_times(jobs: list[Job], t: ReplicaTiming) -> dict[str, tuple[float, float]]:
    """(first token, last token) per request on the real engine, its executor's sleeps
    advancing a fake clock; arrivals join between steps, as in ``AsyncEngine``."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    base = build_simulated_engine("H100:llama-3.1-8b", t.model.engine, sleep=sleep)
    executor = SimulatedExecutor(t.step_time, sleep=sleep, clock=lambda: clock[0])
    engine = LLMEngine(
        base.model_config, base.tokenizer, executor, config=t.model.engine,
        num_blocks=t.num_kv_blocks,
    )  # fmt: skip
    return _drive(jobs, clock, engine)


def _drive(
    jobs: list[Job], clock: list[float], engine: LLMEngine
) -> dict[str, tuple[float, float]]:
    pending = list(enumerate(jobs))
    first: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    while pending or engine.has_unfinished_requests():
        while pending and pending[0][1][0] <= clock[0]:
            i, (_, prompt, output, priority) = pending.pop(0)
            tokens = [3 + (i * 7_001 + j) % 1_000 for j in range(prompt)]
            params = SamplingParams(max_tokens=output, temperature=0)
            engine.add_request(f"q{i}", tokens, params, priority=priority)
        if not engine.has_unfinished_requests():
            clock[0] = pending[0][1][0]
            continue
        for o in engine.step():
            first.setdefault(o.request_id, clock[0])
            if o.finished:
                out[o.request_id] = (first[o.request_id], clock[0])
    return out


def sim_times(
    jobs: list[Job], t: ReplicaTiming, *, decode_runs: bool = True
) -> dict[str, tuple[float, float]]:
    """The same on a ``SimReplica``: an arrival during a step (or decode run) joins the next."""
    replica = SimReplica(t, decode_runs=decode_runs)
    pending = list(enumerate(jobs))
    now = 0.0
    first: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}

    def add(at_s: float) -> None:
        i, (_, prompt, output, priority) = pending.pop(0)
        replica.add(f"q{i}", prompt, output, priority, now_s=at_s)

    while pending or replica.has_work():
        while pending and pending[0][1][0] <= now:
            add(now)
        end = replica.start_step(now)
        if end is None:
            now = pending[0][1][0]
            continue
        while pending and pending[0][1][0] < end:
            add(pending[0][1][0])
            assert replica.step_end_s is not None
            end = replica.step_end_s
        now = end
        for ev in replica.finish_step():
            first.setdefault(ev.request_id, now)
            if ev.finished:
                out[ev.request_id] = (first[ev.request_id], now)
    return out


def assert_same(jobs: list[Job], t: ReplicaTiming) -> None:
    """Step by step and with decode runs, the simulator's times are the engine's."""
    expected = engine_times(jobs, t)
    for decode_runs in (False, True):
        got = sim_times(jobs, t, decode_runs=decode_runs)
        assert got.keys() == expected.keys() == {f"q{i}" for i in range(len(jobs))}
        for rid, (first, last) in expected.items():
            got_first, got_last = got[rid]
            assert got_first == pytest.approx(first, rel=1e-9), (rid, decode_runs)
            assert got_last == pytest.approx(last, rel=1e-9), (rid, decode_runs)


def test_mixed_prompts_and_arrivals_step_as_the_engine() -> None:
    jobs: list[Job] = [
        (0.0, 3_000, 40, 0),
        (0.0, 120, 200, 0),
        (0.05, 900, 5, 0),
        (0.07, 1, 30, 0),  # a one-token prompt: its prefill looks like a decode
        (0.3, 2_500, 60, 0),
        (1.0, 64, 10, 0),
    ]
    assert_same(jobs, timing(EngineConfig()))


def test_priorities_order_prefill_as_on_the_engine() -> None:
    jobs: list[Job] = [(0.0, 600, 8, 5), (0.0, 600, 8, 0), (0.0, 600, 8, 1), (0.01, 600, 8, -1)]
    assert_same(jobs, timing(EngineConfig(max_num_batched_tokens=256)))


def test_preemption_under_kv_pressure_matches_the_engine() -> None:
    """40 blocks of 16 tokens hold 640 tokens: four 100-token prompts growing to 300 tokens
    each cannot all stay; the latest is preempted and recomputed, on both."""
    jobs: list[Job] = [(0.0, 100, 200, 0) for _ in range(4)]
    t = timing(EngineConfig(max_num_seqs=8), num_blocks=40)
    assert_same(jobs, t)
    replica = SimReplica(t)
    for i, (_, prompt, output, _) in enumerate(jobs):
        replica.add(f"q{i}", prompt, output, now_s=0.0)
    now: float | None = 0.0
    while replica.has_work():
        now = replica.start_step(now or 0.0)
        assert now is not None
        replica.finish_step()
    assert replica.scheduler.num_preemptions > 0


def test_requests_the_engine_refuses_are_refused() -> None:
    t = timing(EngineConfig(max_model_len=1_000, max_waiting=1))
    replica = SimReplica(t)
    with pytest.raises(ContextLengthError):
        replica.add("long", 1_000, 10, now_s=0.0)
    replica.add("a", 10, 10, now_s=0.0)
    with pytest.raises(CapacityError) as err:
        replica.add("b", 10, 10, now_s=0.0)
    assert err.value.field == "max_waiting"


def test_abort_frees_the_replica() -> None:
    replica = SimReplica(timing(EngineConfig()))
    replica.add("a", 2_000, 10, now_s=0.0)
    assert replica.start_step(0.0) is not None
    assert replica.abort("a", now_s=0.01) and not replica.abort("a", now_s=0.01)
    assert replica.finish_step() == [] and not replica.has_work()
    assert replica.kv_usage == 0.0
