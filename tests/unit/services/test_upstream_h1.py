"""The pooled HTTP/1.1 client of the hot path against a real aiohttp server on 127.0.0.1:
streamed (chunked) and whole bodies, keep-alive reuse, and each failure mapped as the
aiohttp client maps it (connect, first-byte timeout, mid-stream break, read timeout)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from shipit.services.upstream import AiohttpUpstream, MidStreamError, UpstreamError, relay
from shipit.services.upstream_h1 import H1Pool

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[Any]]]:
    peers: list[Any] = []

    async def wrapped(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return await handler(request)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", wrapped)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", peers
    finally:
        await runner.cleanup()


async def sse(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(3):
        await resp.write(b"data: %d %s\n\n" % (i, body))
        await asyncio.sleep(0.01)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def read_all(pool: H1Pool, url: str, body: bytes = b"{}") -> tuple[int, str, bytes]:
    resp = await pool.open(url, body, {"content-type": "application/json"}, first_byte_timeout_s=5)
    data = b"".join([c async for c in resp.chunks()])
    resp.release()
    return resp.status, resp.headers["content-type"], data


def test_a_chunked_stream_arrives_whole_and_the_connection_is_reused() -> None:
    async def go() -> None:
        pool = H1Pool()
        async with server(sse) as (url, peers):
            first = await read_all(pool, url, b'{"n":1}')
            second = await read_all(pool, url, b'{"n":2}')
        await pool.close()
        assert first[:2] == (200, "text/event-stream")
        assert (
            first[2] == b'data: 0 {"n":1}\n\ndata: 1 {"n":1}\n\ndata: 2 {"n":1}\n\ndata: [DONE]\n\n'
        )
        assert second[2].startswith(b'data: 0 {"n":2}')
        assert peers[0] == peers[1]  # one connection, kept alive

    asyncio.run(go())


def test_a_whole_body_and_an_error_status_are_relayed() -> None:
    async def teapot(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"error": {"message": "no"}}, status=418)

    async def go() -> tuple[int, str, bytes]:
        pool = H1Pool()
        async with server(teapot) as (url, _):
            out = await read_all(pool, url)
        await pool.close()
        return out

    status, ctype, data = asyncio.run(go())
    assert (status, ctype, data) == (
        418,
        "application/json; charset=utf-8",
        b'{"error": {"message": "no"}}',
    )


def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> None:
        pool = H1Pool(connect_timeout_s=1)
        with pytest.raises(UpstreamError) as err:
            await pool.open(f"http://127.0.0.1:{port}/v1/x", b"{}", {}, first_byte_timeout_s=1)
        assert err.value.kind == "connect"

    asyncio.run(go())


def test_a_late_first_byte_is_a_timeout_and_a_stalled_stream_a_mid_stream_error() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.headers.get("x-mode") == "late":
            await asyncio.sleep(2)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(2)  # stalls mid-stream
        return resp

    async def go() -> None:
        pool = H1Pool(read_timeout_s=0.2)
        async with server(slow) as (url, _):
            with pytest.raises(UpstreamError) as err:
                await pool.open(url, b"{}", {"x-mode": "late"}, first_byte_timeout_s=0.2)
            assert err.value.kind == "timeout"
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            got: list[bytes] = []
            with pytest.raises(MidStreamError, match=r"no data from the replica in 0\.2s"):
                async for chunk in resp.chunks():
                    got.append(chunk)
            resp.close()
            assert got == [b"data: 0\n\n"]
        await pool.close()

    asyncio.run(go())


def test_each_wait_on_a_kept_alive_connection_times_out_at_its_own_deadline() -> None:
    """The connection's timer is set once and outlives a wait: a request made on it later
    (its first-byte timeout shorter, then longer, than what the timer was set for) must time
    out after its own timeout, neither sooner nor never."""

    async def answer_or_hang(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.headers.get("x-mode") == "hang":
            await asyncio.sleep(3)
        return web.Response(body=b"ok")

    async def timed_out_after(pool: H1Pool, url: str, timeout_s: float) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamError) as err:
            await pool.open(url, b"{}", {"x-mode": "hang"}, first_byte_timeout_s=timeout_s)
        assert err.value.kind == "timeout"
        return loop.time() - start

    async def go() -> None:
        pool = H1Pool()
        async with server(answer_or_hang) as (url, peers):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=0.6)  # timer: 0.6 s
            assert b"".join([c async for c in resp.chunks()]) == b"ok"
            resp.release()
            await asyncio.sleep(0.2)
            # The same connection (the timer set 0.2 s ago for 0.6 s): a shorter timeout ...
            took_s = await timed_out_after(pool, url, 0.15)
            assert 0.14 <= took_s < 0.35
            # ... and a longer one than the timer left from the first request.
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=0.1)
            assert b"".join([c async for c in resp.chunks()]) == b"ok"
            resp.release()
            took_s = await timed_out_after(pool, url, 0.5)
            assert 0.49 <= took_s < 1.5
        await pool.close()
        # Each timeout drops its connection: two connections, each used twice.
        assert len(peers) == 4 and peers[0] == peers[1] and peers[2] == peers[3], peers

    asyncio.run(go())


def test_a_replica_that_dies_mid_stream_is_a_mid_stream_error() -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()  # as kill -9 would
        return resp

    async def go() -> None:
        pool = H1Pool()
        async with server(dies) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            with pytest.raises(MidStreamError):
                async for _ in resp.chunks():
                    pass
            resp.close()
        await pool.close()

    asyncio.run(go())


def test_closing_a_response_midway_drops_the_connection_for_the_replica_to_see() -> None:
    seen = asyncio.Event()

    async def long(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(200):
                await resp.write(b"data: x\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionResetError, OSError):
            seen.set()
        return resp

    async def go() -> None:
        pool = H1Pool()
        async with server(long) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            async for _ in resp.chunks():
                break
            resp.close()
            await asyncio.wait_for(seen.wait(), 5)
        await pool.close()

    asyncio.run(go())


def test_the_aiohttp_upstream_sends_plain_http_through_the_pool() -> None:
    async def go() -> bytes:
        up = AiohttpUpstream()
        async with server(sse) as (url, _):
            resp = await up.open(url, b"{}", {}, first_byte_timeout_s=5)
            data = b"".join([c async for c in resp.chunks()])
            resp.release()
            assert type(resp).__name__ == "H1Response"
        await up.close()
        return data

    assert asyncio.run(go()).endswith(b"data: [DONE]\n\n")


# ----- relay: each chunk handed over from the connection's read callback ----------------------


async def paced(request: web.Request) -> web.StreamResponse:
    """Ten events 50 ms apart: half a second in all, every gap well under 0.2 s."""
    await request.read()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(10):
        await resp.write(b"data: %d\n\n" % i)
        await asyncio.sleep(0.05)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _keep(got: list[bytes], chunk: bytes, *, behind: bool) -> bool:
    got.append(chunk)
    return behind


async def _no_drain() -> None:
    raise AssertionError("drain called although deliver never asked")


def test_relay_hands_over_every_chunk_from_the_read_callback_and_reuses_the_connection() -> None:
    async def go() -> tuple[bytes, list[bool], list[Any]]:
        pool = H1Pool(read_timeout_s=0.2)  # the stream lasts 0.5 s: the timeout is per read
        got: list[bytes] = []
        in_task: list[bool] = []

        def deliver(chunk: bytes) -> bool:
            got.append(chunk)
            in_task.append(asyncio.current_task() is not None)
            return False

        async with server(paced) as (url, peers):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            await resp.relay(deliver, _no_drain)
            resp.release()
            again = await read_all(pool, url)
        await pool.close()
        assert again[2].endswith(b"data: [DONE]\n\n")
        return b"".join(got), in_task, peers

    data, in_task, peers = asyncio.run(go())
    assert data == b"".join(b"data: %d\n\n" % i for i in range(10)) + b"data: [DONE]\n\n"
    assert len(in_task) >= 10  # one hand-over per read, and the events came 50 ms apart
    # Apart from what came with the headers, every chunk was handed over by the connection's
    # read callback, outside any task: no future, no task switch per chunk.
    assert in_task[1:] == [False] * (len(in_task) - 1)
    assert peers[0] == peers[1]  # read to the end: the connection served the next request


def test_relay_of_a_stalled_stream_is_a_mid_stream_error_after_the_read_timeout() -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(2)
        return resp

    async def go() -> list[bytes]:
        pool = H1Pool(read_timeout_s=0.2)
        got: list[bytes] = []
        async with server(stalls) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            with pytest.raises(MidStreamError, match=r"no data from the replica in 0\.2s"):
                await resp.relay(lambda c: _keep(got, c, behind=False), _no_drain)
            resp.close()
        await pool.close()
        return got

    assert asyncio.run(go()) == [b"data: 0\n\n"]


def test_relay_of_a_replica_that_dies_is_a_mid_stream_error() -> None:
    async def dies(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def go() -> None:
        pool = H1Pool()
        async with server(dies) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            with pytest.raises(MidStreamError):
                await resp.relay(lambda c: False, _no_drain)
            resp.close()
        await pool.close()

    asyncio.run(go())


def test_relay_pauses_reading_while_the_consumer_is_behind() -> None:
    async def go() -> tuple[bytes, list[bool]]:
        pool = H1Pool()
        got: list[bytes] = []
        reading_while_drained: list[bool] = []
        holder: dict[str, Any] = {}

        def deliver(chunk: bytes) -> bool:
            got.append(chunk)
            return len(got) == 2  # behind once, after the second hand-over

        async def drain() -> None:
            transport = holder["resp"]._conn.transport
            reading_while_drained.append(transport.is_reading())
            n = len(got)
            await asyncio.sleep(0.2)  # the replica writes on meanwhile ...
            assert len(got) == n  # ... and nothing is handed over until the drain ends
            reading_while_drained.append(transport.is_reading())

        async with server(paced) as (url, _):
            resp = holder["resp"] = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            await resp.relay(deliver, drain)
            resp.release()
        await pool.close()
        return b"".join(got), reading_while_drained

    data, reading = asyncio.run(go())
    assert data == b"".join(b"data: %d\n\n" % i for i in range(10)) + b"data: [DONE]\n\n"
    assert reading == [False, False]  # paused for the whole drain, then read on to the end


def test_an_error_in_deliver_ends_the_relay_with_that_error() -> None:
    class BoomError(Exception):
        pass

    def deliver(chunk: bytes) -> bool:
        if b"data: 3" in chunk:
            raise BoomError("the consumer failed")
        return False

    async def go() -> None:
        pool = H1Pool()
        async with server(paced) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            with pytest.raises(BoomError, match="the consumer failed"):
                await resp.relay(deliver, _no_drain)
            resp.close()
        await pool.close()

    asyncio.run(go())


def test_relay_iterates_a_response_that_has_no_relay_of_its_own() -> None:
    class Plain:
        status = 200

        def __init__(self) -> None:
            self.headers: Mapping[str, str] = {}

        async def chunks(self) -> AsyncIterator[bytes]:
            for c in (b"a", b"b", b"c"):
                yield c

        def close(self) -> None: ...

        def release(self) -> None: ...

    got: list[bytes] = []
    drained: list[int] = []

    async def drain() -> None:
        drained.append(len(got))

    asyncio.run(relay(Plain(), lambda c: _keep(got, c, behind=c == b"b"), drain))
    assert got == [b"a", b"b", b"c"]
    assert drained == [2]  # after the chunk the consumer was behind on, before the next


def test_relay_loses_nothing_that_arrives_while_the_first_chunk_is_being_drained() -> None:
    """The first chunk came with the headers and the client is behind at once: the rest of the
    answer arrives, to its end, while the relay waits for the drain, and must follow it."""

    async def quick(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(0.1)
        for i in range(1, 5):
            await resp.write(b"data: %d\n\n" % i)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def go() -> bytes:
        pool = H1Pool()
        got: list[bytes] = []

        async def drain() -> None:
            await asyncio.sleep(0.3)  # the rest of the answer, to its end, comes meanwhile

        async with server(quick) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            await asyncio.sleep(0.03)  # the first chunk is in before the relay begins
            await resp.relay(lambda c: _keep(got, c, behind=len(got) == 0), drain)
            resp.release()
        await pool.close()
        return b"".join(got)

    want = b"".join(b"data: %d\n\n" % i for i in range(5)) + b"data: [DONE]\n\n"
    assert asyncio.run(go()) == want


def test_reading_pauses_past_high_water_until_the_chunks_are_taken() -> None:
    """Without a relay, what the replica sends is buffered only up to ``high_water``: then
    the connection stops reading until ``chunks`` takes what is there; nothing is lost."""
    part = b"data: " + b"x" * 8_000 + b"\n\n"

    async def firehose(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(200):  # 1.6 MB, far past the 64 KiB mark
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def go() -> tuple[bool, int, int]:
        pool = H1Pool(high_water=64 * 1024)
        async with server(firehose) as (url, _):
            resp = await pool.open(url, b"{}", {}, first_byte_timeout_s=5)
            await asyncio.sleep(0.3)  # the replica writes; nobody takes the chunks
            conn = resp._conn  # type: ignore[attr-defined]
            paused = not conn.transport.is_reading()
            held = conn.buffered
            data = b"".join([c async for c in resp.chunks()])
            resp.release()
        await pool.close()
        return paused, held, len(data)

    paused, held, n = asyncio.run(go())
    assert paused and held < 2 * 64 * 1024 + 65_536  # stopped near the mark, not at 1.6 MB
    assert n == 200 * len(part)
