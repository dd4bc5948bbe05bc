"""Choices fanned out and merged back: a client that leaves a stream of several choices aborts
every one of them; a choice the engine refuses fails the request and aborts its siblings; the
merge hands on an error from any choice. The tiny model runs in-process (no lifespan: the
replica is loaded by hand), driven through the ASGI interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shipit.engine.engine import RequestOutput
from shipit.replica.app import create_app
from shipit.replica.generate import merged
from shipit.replica.settings import ReplicaSettings
from support.asgi import call
from support.tiny_model import write_tiny_hf_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")


def output(rid: str, finished: bool) -> RequestOutput:
    return RequestOutput(rid, (5,), "x", finished, "stop" if finished else None, 1, 1, 0)


def test_leaving_a_stream_of_three_choices_aborts_all_three(model_dir: Path) -> None:
    async def main() -> tuple[int, int]:
        app = create_app(ReplicaSettings(model=str(model_dir), served_model_name="tiny"))
        replica = app.state.replica
        await replica.load()
        assert replica.engine is not None
        leave = asyncio.Event()
        body = {
            "model": "tiny",
            "prompt": "hello",
            "n": 3,
            "max_tokens": 200,
            "ignore_eos": True,
            "stream": True,
        }
        request = asyncio.ensure_future(
            call(app, "POST", "/v1/completions", body, disconnect=leave)
        )
        # Leave mid-stream: after every choice is running and some tokens were sent.
        while (await replica.engine.stats()).generation_tokens < 30:
            await asyncio.sleep(0.01)
        assert replica.engine.num_streams == 3
        leave.set()
        result = await request
        stats = await replica.engine.stats()
        running = stats.num_running + stats.num_waiting + replica.engine.num_streams
        await replica.close()
        return result.status, running

    status, running = asyncio.run(main())
    assert status == 200 and running == 0


def test_a_refused_choice_fails_the_request_and_aborts_the_others(model_dir: Path) -> None:
    async def main() -> tuple[int, str, int]:
        app = create_app(ReplicaSettings(model=str(model_dir), served_model_name="tiny"))
        replica = app.state.replica
        await replica.load()
        assert replica.engine is not None
        # The second prompt holds a token id outside the 384-token vocabulary.
        body = {"model": "tiny", "prompt": [[5, 6], [5, 99_999]], "max_tokens": 50}
        result = await call(app, "POST", "/v1/completions", body)
        stats = await replica.engine.stats()
        await replica.close()
        return result.status, result.json()["error"]["param"], stats.num_running + stats.num_waiting

    status, param, left = asyncio.run(main())
    assert (status, param, left) == (400, "prompt", 0)


def test_merge_hands_on_an_error_from_any_choice() -> None:
    async def ok() -> AsyncIterator[RequestOutput]:
        while True:
            yield output("a", False)
            await asyncio.sleep(0)

    async def broken() -> AsyncIterator[RequestOutput]:
        await asyncio.sleep(0)
        raise RuntimeError("step failed")
        yield output("b", True)  # pragma: no cover - makes this an async generator

    async def main() -> list[int]:
        seen: list[int] = []
        firsts = [output("a", False), output("b", False)]
        with pytest.raises(RuntimeError, match="step failed"):
            async for i, _ in merged(firsts, [ok(), broken()]):
                seen.append(i)
        return seen

    seen = asyncio.run(main())
    assert {0, 1} <= set(seen)  # both choices got through before the error ended it


def test_merge_ends_when_every_choice_finished() -> None:
    async def finishing(rid: str, n: int) -> AsyncIterator[RequestOutput]:
        for k in range(n):
            await asyncio.sleep(0)
            yield output(rid, k == n - 1)

    async def main() -> list[int]:
        firsts = [output("a", False), output("b", False)]
        return [i async for i, _ in merged(firsts, [finishing("a", 3), finishing("b", 1)])]

    order = asyncio.run(main())
    assert sorted(order) == [0, 0, 0, 0, 1, 1]


def test_choice_zero_of_a_seeded_request_is_the_same_request_with_n_1(model_dir: Path) -> None:
    async def main() -> tuple[list[str], list[str]]:
        app = create_app(ReplicaSettings(model=str(model_dir), served_model_name="tiny"))
        replica = app.state.replica
        await replica.load()
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 8, "seed": 42}
        one = await call(app, "POST", "/v1/completions", body)
        three = await call(app, "POST", "/v1/completions", body | {"n": 3})
        await replica.close()
        return [c["text"] for c in one.json()["choices"]], [
            c["text"] for c in three.json()["choices"]
        ]

    one, three = asyncio.run(main())
    assert three[0] == one[0]
    assert len(set(three)) == 3  # seeds 42, 43, 44: three different samples
