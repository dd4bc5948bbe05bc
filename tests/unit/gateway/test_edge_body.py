"""Reading a request body at the edge: the size limit, and the timer for slow bodies (a
408 for a body that stops arriving; any other cancellation passes through untouched)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipit.gateway.edge import EdgeError, read_body


def _parts(*chunks: bytes, stall: bool = False) -> Any:
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.sleep(3600)  # the client stopped sending
        chunk = queue.pop(0)
        more = bool(queue) or stall
        return {"type": "http.request", "body": chunk, "more_body": more}

    return receive


def test_a_body_in_several_messages_is_joined() -> None:
    got = asyncio.run(read_body(_parts(b"ab", b"cd", b"e"), "5", max_bytes=10, timeout_s=5))
    assert got == b"abcde"


def test_a_body_that_stops_arriving_is_a_408_naming_the_limit() -> None:
    async def main() -> EdgeError:
        with pytest.raises(EdgeError) as err:
            await read_body(_parts(b"{", stall=True), None, max_bytes=10, timeout_s=0.05)
        # The timer is gone with the read: the task is not cancelled later.
        await asyncio.sleep(0.1)
        return err.value

    err = asyncio.run(main())
    assert err.status == 408
    assert "within 0.05s" in str(err) and "body_timeout_s" in str(err)


def test_a_cancellation_from_elsewhere_is_not_turned_into_a_408() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(
            read_body(_parts(b"{", stall=True), None, max_bytes=10, timeout_s=5)
        )
        await asyncio.sleep(0.02)
        task.cancel()  # the client left, or the server stops
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_body_over_the_limit_is_a_413_before_it_is_all_read() -> None:
    with pytest.raises(EdgeError) as err:
        asyncio.run(read_body(_parts(b"x" * 8, b"y" * 8), None, max_bytes=10, timeout_s=5))
    assert err.value.status == 413


def test_a_body_the_server_handed_over_is_only_checked_against_the_limits() -> None:
    async def never() -> dict[str, Any]:
        raise AssertionError("receive was called for a body already handed over")

    assert asyncio.run(read_body(never, "5", max_bytes=10, timeout_s=5, whole=b"abcde")) == b"abcde"
    with pytest.raises(EdgeError) as too_big:
        asyncio.run(read_body(never, None, max_bytes=10, timeout_s=5, whole=b"x" * 11))
    with pytest.raises(EdgeError) as declared:
        asyncio.run(read_body(never, "99", max_bytes=10, timeout_s=5, whole=b"x"))
    assert too_big.value.status == declared.value.status == 413
