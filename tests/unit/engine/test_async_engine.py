"""The asyncio face of the engine: concurrent streams, errors before output, abort on a
consumer that goes away, calls between steps."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shipit.core.errors import InvalidRequestError, UnknownAdapterError
from shipit.engine.async_engine import AsyncEngine
from shipit.engine.engine import LLMEngine, RequestOutput
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.sampling import SamplingParams
from support.engine_harness import GREEDY, engine_for, prompts_of, run
from support.tiny_model import write_tiny_hf_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")))


async def collect(engine: AsyncEngine, rid: str, prompt: list[int]) -> list[RequestOutput]:
    return [o async for o in engine.generate(rid, prompt, GREEDY)]


def test_concurrent_streams_match_the_sync_engine(tiny: LoadedModel) -> None:
    prompts = prompts_of([5, 12, 3])
    expected = run(engine_for(tiny), prompts)

    async def main() -> dict[str, list[RequestOutput]]:
        async with AsyncEngine(engine_for(tiny)) as engine:
            results = await asyncio.gather(*(collect(engine, r, p) for r, p in prompts.items()))
        return dict(zip(prompts, results, strict=True))

    got = asyncio.run(main())
    for rid, outs in got.items():
        assert [t for o in outs for t in o.new_token_ids] == expected[rid]
        assert outs[-1].finished and outs[-1].finish_reason == "length"
        assert not any(o.finished for o in outs[:-1])


def test_errors_surface_before_any_output(tiny: LoadedModel) -> None:
    async def main() -> None:
        async with AsyncEngine(engine_for(tiny)) as engine:
            with pytest.raises(UnknownAdapterError):
                await collect_lora(engine)
            with pytest.raises(InvalidRequestError):
                await collect(engine, "empty", [])
            # The engine still serves after bad requests.
            assert len(await collect(engine, "ok", [1, 2, 3])) == GREEDY.max_tokens

    async def collect_lora(engine: AsyncEngine) -> None:
        async for _ in engine.generate("x", [1, 2], GREEDY, lora_name="missing"):
            pass

    asyncio.run(main())


def test_a_consumer_that_stops_reading_aborts_and_frees_blocks(tiny: LoadedModel) -> None:
    long = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)

    async def main() -> LLMEngine:
        sync = engine_for(tiny)
        async with AsyncEngine(sync) as engine:
            stream = engine.generate("gone", prompts_of([20])["r0"], long)
            async for out in stream:
                if out.num_output_tokens >= 2:
                    break
            await stream.aclose()
            # The abort crosses to the engine thread; a call after it runs after it.
            await engine.call(lambda e: None)
            assert engine.num_streams == 0
        return sync

    engine = asyncio.run(main())
    assert not engine.has_unfinished_requests()
    assert engine.stats().kv_cache_usage_perc == 0


def test_calls_run_between_steps_and_return_values(tiny: LoadedModel) -> None:
    async def main() -> object:
        async with AsyncEngine(engine_for(tiny)) as engine:
            return await engine.call(lambda e: e.stats().num_blocks)

    assert isinstance(asyncio.run(main()), int)


def test_a_consumer_cancelled_before_admission_leaves_nothing_running(tiny: LoadedModel) -> None:
    """The request sits in the inbox behind a step when its consumer is cancelled (a client
    that disconnects before its first token): the engine must not keep generating for it."""
    long = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)

    async def main() -> tuple[bool, int]:
        sync = engine_for(tiny)
        async with AsyncEngine(sync) as engine:
            busy = engine.generate("busy", prompts_of([20])["r0"], long)
            await anext(busy)  # the engine thread is now stepping
            gone = asyncio.ensure_future(anext(engine.generate("gone", [1, 2, 3], long)))
            await asyncio.sleep(0)  # its add is queued in the inbox
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            await busy.aclose()
            busy_left = await engine.call(lambda e: e.has_unfinished_requests())
            return busy_left, engine.num_streams

    unfinished, streams = asyncio.run(main())
    assert not unfinished and streams == 0
