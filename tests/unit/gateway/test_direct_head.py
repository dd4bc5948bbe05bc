"""The response head and its end written straight to the client's connection
(``DirectBody.start``, ``finish``, ``take_body``), for real: the same bytes as uvicorn's
``send``, kept-alive or closing; a client that expects ``100 Continue``; and the end of an
answer written before the request's own bookkeeping."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from shipit.gateway.direct import DirectBody

from .test_direct_body import DONE, EVENTS, REQUEST, _gateway, _paced, _replica


async def _raw_exchange(gw_url: str, requests: list[bytes]) -> list[bytes]:
    """Each request on one raw connection, in turn; what came back for each (head and chunked
    body, up to the terminating chunk), or, after a response that closes, b"" at EOF."""
    host, port = gw_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    got: list[bytes] = []
    try:
        for raw in requests:
            writer.write(raw)
            try:
                got.append(await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10))
            except asyncio.IncompleteReadError as exc:
                got.append(exc.partial)
        got.append(
            await asyncio.wait_for(reader.read(), 10)
            if b"connection: close" in got[-1]
            else b"open"
        )
    finally:
        writer.close()
    return got


async def _answer(replica: Any) -> bytes:
    """One streamed chat completion through a gateway in front of ``replica``, read whole."""
    async with (
        _replica(replica) as url,
        _gateway(url) as (_, gw_url),
        aiohttp.ClientSession() as s,
        s.post(f"{gw_url}/v1/chat/completions", json=REQUEST) as r,
    ):
        return await r.read()


def _post(close: bool = False) -> bytes:
    body = json.dumps(REQUEST).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        + (b"connection: close\r\n" if close else b"")
        + b"x-request-id: fixed\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    return head + body


def _stable(response: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"date: D\r\n", response)


@pytest.mark.parametrize("close", [False, True])
def test_the_head_and_the_end_written_directly_are_what_uvicorn_writes(
    close: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    start, finish = DirectBody.start, DirectBody.finish

    def counted_start(self: DirectBody, *a: Any) -> bool:
        calls.append("start")
        return start(self, *a)

    def counted_finish(self: DirectBody) -> bool:
        calls.append("finish")
        return finish(self)

    async def go() -> list[bytes]:
        async with _replica(_paced) as url, _gateway(url) as (_, gw_url):
            return await _raw_exchange(gw_url, [_post(), _post(close)])

    monkeypatch.setattr(DirectBody, "start", lambda self, *a: False)
    monkeypatch.setattr(DirectBody, "finish", lambda self: False)
    through_send = uvloop.run(go())
    monkeypatch.setattr(DirectBody, "start", counted_start)
    monkeypatch.setattr(DirectBody, "finish", counted_finish)
    direct = uvloop.run(go())
    assert calls == ["start", "finish"] * 2
    assert [_stable(r) for r in direct] == [_stable(r) for r in through_send]
    assert (
        direct[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in direct[0]
    )
    # Kept alive after the first answer; with "connection: close", said and done.
    assert (b"connection: close" in direct[1], direct[2]) == (
        (True, b"") if close else (False, b"open")
    )


@pytest.mark.parametrize(
    "names",
    [
        (b"content-type", b"expect: 100-continue", b"content-length"),
        (b"Content-Type", b"EXPECT: 100-Continue", b"Content-Length"),  # any case, as HTTP says
    ],
)
def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(
    names: tuple[bytes, bytes, bytes],
) -> None:
    """The body is taken from the server only once all of it is there: a client that waits
    for ``100 Continue`` is answered through ``receive``, then its body is read as usual."""
    body = json.dumps(REQUEST).encode()
    ctype, expect, length = names
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n%s: application/json\r\n" % ctype
    head += b"%s\r\n%s: %d\r\n\r\n" % (expect, length, len(body))

    async def go() -> tuple[bytes, bytes]:
        async with _replica(_paced) as url, _gateway(url) as (_, gw_url):
            host, port = gw_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(head)
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                writer.write(body)
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
            finally:
                writer.close()
            return interim, answer

    interim, answer = uvloop.run(go())
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"data: [DONE]" in answer


def test_the_answer_ends_before_the_request_gives_its_slot_back_and_is_accounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client gets the end of its answer as soon as the replica's last byte is relayed;
    the slot, the accounting and the metrics come after, off its time to the last byte."""
    from shipit.services.router import RouterService

    order: list[str] = []
    finish, release = DirectBody.finish, RouterService.release

    def finishing(self: DirectBody) -> bool:
        order.append("end")
        return finish(self)

    def releasing(self: RouterService, *a: Any, **kw: Any) -> Any:
        order.append("release")
        return release(self, *a, **kw)

    monkeypatch.setattr(DirectBody, "finish", finishing)
    monkeypatch.setattr(RouterService, "release", releasing)

    assert uvloop.run(_answer(_paced)) == b"".join(EVENTS) + DONE
    assert order == ["end", "release"]


async def _at_once(request: web.Request) -> web.Response:
    await request.read()
    body = b"".join(EVENTS) + DONE  # the whole answer in one write: one read at the gateway
    return web.Response(body=body, headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("replica", [_paced, _at_once], ids=["paced", "at_once"])
def test_the_first_token_goes_out_before_the_router_is_told_and_is_told_before_release(
    monkeypatch: pytest.MonkeyPatch, replica: Any
) -> None:
    """The router's pace book learns of the first token after the token's bytes were handed
    to the client's connection (not between them), at the token's own time, and before the
    slot goes back, even when the whole answer came in one read; a token that comes alone is
    written before it is accounted."""
    from shipit.gateway.accounting import Tally
    from shipit.gateway.coalesce import CoalescingTransport
    from shipit.services.router import RouterService

    order: list[str] = []
    seen: list[tuple[str, bytes]] = []  # lone tokens written through, and chunks accounted
    told_at: list[float | None] = []
    flush, through, first, release, chunk = (
        CoalescingTransport._flush,
        CoalescingTransport.write_through,
        RouterService.first_token,
        RouterService.release,
        Tally.chunk,
    )

    def accounting(self: Tally, data: bytes, now_s: float) -> None:
        seen.append(("accounted", data))
        chunk(self, data, now_s)

    def flushing(self: CoalescingTransport) -> None:
        if any(b"data: {" in b for b in self._buf):
            order.append("token out")
        flush(self)

    def writing_through(self: CoalescingTransport, data: bytes) -> None:
        if b"data: {" in data and not self._buf:
            order.append("token out")
            seen.append(("out", data))
        through(self, data)

    def told(self: RouterService, lease: Any, at_s: float | None = None) -> None:
        order.append("first token told")
        told_at.append(at_s)
        first(self, lease, at_s)

    def releasing(self: RouterService, *a: Any, **kw: Any) -> Any:
        order.append("release")
        return release(self, *a, **kw)

    monkeypatch.setattr(CoalescingTransport, "_flush", flushing)
    monkeypatch.setattr(CoalescingTransport, "write_through", writing_through)
    monkeypatch.setattr(RouterService, "first_token", told)
    monkeypatch.setattr(RouterService, "release", releasing)
    monkeypatch.setattr(Tally, "chunk", accounting)

    assert uvloop.run(_answer(replica)) == b"".join(EVENTS) + DONE
    assert order.count("first token told") == 1
    assert order.index("token out") < order.index("first token told") < order.index("release")
    assert told_at[0] is not None  # the token's arrival time, not the time of the callback
    if replica is _paced:  # a token that comes alone goes out before it is accounted
        lone = [(i, data) for i, (kind, data) in enumerate(seen) if kind == "out"]
        assert len(lone) >= 10
        for i, framed in lone:  # written with its chunk framing around the event accounted
            j = next(j for j, (k, d) in enumerate(seen) if k == "accounted" and d in framed)
            assert i < j
