"""Drain waits for in-flight work, or cancels it at the timeout."""

from __future__ import annotations

import asyncio

from shipit.replica.lifecycle import Lifecycle, Phase


def test_drain_waits_for_in_flight_work() -> None:
    async def main() -> None:
        life = Lifecycle()
        assert not life.accepting
        life.ready()
        assert life.accepting
        release = asyncio.Event()

        async def work() -> None:
            await release.wait()

        task: asyncio.Task[object] = asyncio.create_task(work())  # type: ignore[arg-type]
        life.enter(task)
        drain = asyncio.create_task(life.drain(timeout_s=60))
        await asyncio.sleep(0)
        assert life.phase is Phase.DRAINING and not life.accepting and not drain.done()
        release.set()
        await task
        life.leave(task)
        assert await drain == 0
        assert life.phase is Phase.STOPPED and life.drained.is_set()
        assert await life.drain(timeout_s=60) == 0  # a second drain is a no-op

    asyncio.run(main())


def test_drain_timeout_cancels_what_is_left() -> None:
    async def main() -> None:
        life = Lifecycle()
        life.ready()

        async def forever() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                life.leave(task)

        task: asyncio.Task[object] = asyncio.create_task(forever())  # type: ignore[arg-type]
        life.enter(task)
        await asyncio.sleep(0)
        assert await life.drain(timeout_s=0) == 1
        assert task.cancelled() and life.num_inflight == 0

    asyncio.run(main())


def test_failure_is_terminal() -> None:
    life = Lifecycle()
    life.fail("boom")
    life.ready()
    assert life.phase is Phase.FAILED and life.error == "boom"
