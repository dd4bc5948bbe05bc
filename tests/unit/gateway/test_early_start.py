"""The early start, for real: a whole inference request is routed and written to its replica
from the server protocol's parser callback (``gateway.protocol``, ``gateway.inference.start``),
before it has a task; everything else about it is as on the whole way. Requests the early start
must leave alone (keys to check, a body the edge or the parser refuses, a body in several
reads, pipelined requests) take the whole way and get the same answers; a request with no slot
free at once waits in the queue, counted once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import uvloop

from shipit.core.fleet import ReplicaState
from shipit.gateway import inference
from shipit.gateway.app import Gateway
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key
from shipit.services.upstream_h1 import H1Pool

from .test_direct_body import DONE, EVENTS, REQUEST, _gateway, _paced, _replica
from .test_direct_head import _at_once

VOLATILE = ("date", "x-shipit-request-id")  # differ from one request to the next


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per early start asked for: whether it began the request (an app back)."""
    seen: list[bool] = []
    original = inference.start

    def counted(*a: Any, **kw: Any) -> Any:
        app = original(*a, **kw)
        seen.append(app is not None)
        return app

    monkeypatch.setattr(inference, "start", counted)
    return seen


async def _post(gw_url: str, payload: Any, headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw_url}/v1/chat/completions", data=payload, headers=headers) as r,
    ):
        kept = {k.lower(): v for k, v in r.headers.items() if k.lower() not in VOLATILE}
        return r.status, kept, await r.read()


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def _answers(replica: Any, payloads: list[bytes], **gw: Any) -> list[Any]:
    async with _replica(replica) as url, _gateway(url, **gw) as (_, gw_url):
        return [await _post(gw_url, p, {"content-type": "application/json"}) for p in payloads]


def test_a_whole_request_goes_to_its_replica_from_the_parser_callback(
    monkeypatch: pytest.MonkeyPatch, starts: list[bool]
) -> None:
    """On a kept-alive replica connection the request is written in the callback that parsed
    its last byte (no task yet); the client gets what the whole way gives, byte for byte."""
    pooled: list[tuple[bool, bool]] = []  # (outside any task, a kept-alive connection)
    original = H1Pool._pooled

    def taking(self: H1Pool, key: Any) -> Any:
        conn = original(self, key)
        pooled.append((asyncio.current_task() is None, conn is not None))
        return conn

    monkeypatch.setattr(H1Pool, "_pooled", taking)
    early = uvloop.run(_answers(_at_once, [_json(REQUEST)] * 3))
    assert starts == [True, True, True]
    assert pooled[0] == (True, False)  # the first opens a connection (written once it is made)
    assert pooled[1:] == [(True, True), (True, True)]  # the rest: written from the callback

    monkeypatch.setattr(Gateway, "early_start", None)  # the whole way, for comparison
    whole = uvloop.run(_answers(_at_once, [_json(REQUEST)] * 3))
    assert len(starts) == 3  # not asked again
    assert early == whole
    assert early[0][0] == 200 and early[0][2] == b"".join(EVENTS) + DONE
    assert "x-shipit-route" in early[0][1]


def test_requests_it_leaves_alone_take_the_whole_way_with_the_same_answers(
    monkeypatch: pytest.MonkeyPatch, starts: list[bool]
) -> None:
    """A body that is not JSON (400), an unknown model (404), one over the body limit (413),
    and a good one: the early start begins only the good one, and every answer is the one
    the whole way gives."""
    payloads = [
        b"{not json",
        _json({**REQUEST, "model": "nope"}),
        _json({**REQUEST, "messages": [{"role": "user", "content": "x" * 4000}]}),
        _json(REQUEST),
    ]
    limits = {"gateway": {"limits": {"max_body_bytes": 2048}}}
    early = uvloop.run(_answers(_at_once, payloads, **limits))
    assert starts == [False, False, False, True]
    assert [status for status, _, _ in early] == [400, 404, 413, 200]
    monkeypatch.setattr(Gateway, "early_start", None)
    assert uvloop.run(_answers(_at_once, payloads, **limits)) == early


def test_with_keys_every_request_takes_the_whole_way(starts: list[bool]) -> None:
    kf = KeyFile()
    kf.tenants["acme"] = Tenant(name="acme")
    kf, key = new_key(kf, "acme", "user")

    async def go() -> list[int]:
        auth = {"auth": {"required": True}}
        async with (
            _replica(_at_once) as url,
            _gateway(url, auth, keys=KeyStore(kf)) as (_, gw_url),
        ):
            out = []
            for headers in ({}, {"authorization": f"Bearer {key}"}):
                status, _, _ = await _post(gw_url, _json(REQUEST), headers)
                out.append(status)
            return out

    assert uvloop.run(go()) == [401, 200]
    assert starts == [False, False]


def test_a_body_in_two_reads_and_pipelined_requests_are_served_as_before(
    starts: list[bool],
) -> None:
    """Headers first, the body later: started as usual at the end of the first read. Two
    requests written at once: the first starts early, the second waits behind its answer."""
    body = _json(REQUEST)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )

    async def go() -> tuple[bytes, bytes]:
        async with _replica(_at_once) as url, _gateway(url) as (_, gw_url):
            host, port = gw_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(body)
                split = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
                writer.write((head + body) * 2)
                both = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
                both += await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
            finally:
                writer.close()
            return split, both

    split, both = uvloop.run(go())
    assert split.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in split
    assert both.count(b"HTTP/1.1 200") == 2 and both.count(b"data: [DONE]") == 2
    assert starts == [True]  # only the first of the pipelined pair was asked


def test_a_request_with_no_slot_free_waits_in_the_queue_counted_once(starts: list[bool]) -> None:
    """One slot, three streams at once: the first is placed early, the others wait in the
    queue from the early start and get the slot in turn; each arrival is counted once and
    every slot goes back."""

    async def go() -> tuple[list[Any], Gateway]:
        queueing = {"max_concurrency": 1, "max_queue": 8}
        async with _replica(_paced) as url, _gateway(url, queueing=queueing) as (gw, gw_url):
            got = await asyncio.gather(*(_post(gw_url, _json(REQUEST)) for _ in range(3)))
            return list(got), gw

    got, gw = uvloop.run(go())
    assert [status for status, _, _ in got] == [200, 200, 200]
    assert all(body == b"".join(EVENTS) + DONE for _, _, body in got)
    assert starts == [True, True, True]
    router = gw.routers["default"]
    assert router.arrivals == 3
    assert router.registry.records()[0].in_flight == 0


def test_a_client_that_leaves_before_its_answer_gives_its_slot_back(starts: list[bool]) -> None:
    """Begun early, then the client goes before the replica answers: the request is aborted
    and its slot goes back, as on the whole way."""
    body = _json(REQUEST)
    raw = (
        b"POST /v1/chat/completions HTTP/1.0\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )

    def in_flight(gw: Gateway) -> int:
        return gw.routers["default"].registry.records()[0].in_flight

    async def go() -> tuple[int, int]:
        async with _replica(_paced) as url, _gateway(url) as (gw, gw_url):
            host, port = gw_url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw)
            await writer.drain()
            await asyncio.sleep(0.05)  # placed and streaming (20 events 10 ms apart)
            during = in_flight(gw)
            writer.close()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if in_flight(gw) == 0:
                    break
            return during, in_flight(gw)

    assert uvloop.run(go()) == (1, 0)
    assert starts == [True]


def test_a_replica_that_refuses_the_early_request_is_retried_on_another(
    starts: list[bool],
) -> None:
    """The first attempt's upstream request, made in the early start, fails to connect: the
    request core retries it on the other replica, as it does any first attempt."""

    async def go() -> tuple[list[int], bool]:
        async with _replica(_at_once) as url, _gateway(url) as (gw, gw_url):
            # A replica address nothing listens on (a port just closed).
            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            dead = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            server.close()
            await server.wait_closed()
            router = gw.routers["default"]
            router.add_replica("dead", dead, state=ReplicaState.READY)
            statuses = [(await _post(gw_url, _json(REQUEST)))[0] for _ in range(4)]
            record = next(r for r in router.registry.records() if r.replica_id == "dead")
            return statuses, record.ejected_until_s is not None

    statuses, dead_ejected = uvloop.run(go())
    assert statuses == [200, 200, 200, 200]
    assert dead_ejected  # it was tried, failed and was set aside
    assert starts == [True, True, True, True]
