"""Body chunks written straight to the client's connection (``gateway.direct``), for real:
the gateway served by uvicorn with its own protocol, in front of a replica on 127.0.0.1 that
it reaches through its pooled HTTP/1.1 client. The answer arrives byte for byte; its chunks go
from the replica's connection to the client's in the read callback; a client that stops
reading pauses the replica's connection; a ``send`` wrapped by middleware is never bypassed,
and the edge's metering (keys on) sees every chunk that goes past it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.gateway import direct as direct_mod
from shipit.gateway.app import Gateway, create_gateway
from shipit.gateway.direct import DirectBody
from shipit.gateway.server import bind_socket, make_server
from shipit.services.audit import AuditLog
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key

EVENTS = [b'data: {"choices":[{"delta":{"content":"t%d"}}]}\n\n' % i for i in range(20)]
DONE = b"data: [DONE]\n\n"
REQUEST = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _paced(request: web.Request) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for event in EVENTS:
        await resp.write(event)
        await asyncio.sleep(0.01)
    await resp.write(DONE)
    await resp.write_eof()
    return resp


@asynccontextmanager
async def _replica(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _gateway(
    replica_url: str,
    gateway: dict[str, Any] | None = None,
    queueing: dict[str, Any] | None = None,
    **kw: Any,
) -> AsyncIterator[tuple[Gateway, str]]:
    deployment = {"model": "m", "replicas": 0, **({"queueing": queueing} if queueing else {})}
    cfg = parse_config({"gateway": gateway or {}, "deployments": [deployment]})
    gw = create_gateway(cfg, clock=RealClock(), monitor=False, **kw)
    gw.routers["default"].add_replica("r0", replica_url, state=ReplicaState.READY)
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(gw, graceful_shutdown_s=1, log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.01)
    try:
        yield gw, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per direct write: whether it ran inside a task (False: a read callback)."""
    seen: list[bool] = []
    original = direct_mod.DirectBody.write

    def counted(self: DirectBody, chunk: bytes) -> bool:
        seen.append(asyncio.current_task() is not None)
        return original(self, chunk)

    monkeypatch.setattr(direct_mod.DirectBody, "write", counted)
    return seen


def test_a_stream_goes_straight_from_the_replica_connection_to_the_client(
    writes: list[bool],
) -> None:
    async def go() -> tuple[int, str, bytes]:
        async with (
            _replica(_paced) as url,
            _gateway(url) as (_, gw_url),
            aiohttp.ClientSession() as s,
            s.post(f"{gw_url}/v1/chat/completions", json=REQUEST) as r,
        ):
            return r.status, r.headers["x-shipit-replica"], await r.read()

    status, replica, body = uvloop.run(go())
    assert (status, replica) == (200, "r0")
    assert body == b"".join(EVENTS) + DONE  # byte for byte, framing undone by the client
    assert len(writes) >= 10  # the events came 10 ms apart: many reads, each written directly
    # Apart from what came with the replica's headers, each write ran in the replica
    # connection's read callback: no task woke up per chunk.
    assert writes[1:] == [False] * (len(writes) - 1)


def test_a_client_that_stops_reading_pauses_the_replica_connection(
    writes: list[bool],
) -> None:
    big = b"data: " + b"x" * 65_000 + b"\n\n"
    pending: dict[str, float | None] = {"since": None}  # when the replica's current write began

    async def firehose(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        for _ in range(400):  # 26 MB: far more than the sockets' buffers hold
            pending["since"] = loop.time()
            await resp.write(big)
            pending["since"] = None
        await resp.write(DONE)
        await resp.write_eof()
        return resp

    async def replica_blocked() -> None:
        """Until one write of the replica has waited half a second: the gateway stopped
        reading its connection."""
        loop = asyncio.get_running_loop()
        while True:
            since = pending["since"]
            if since is not None and loop.time() - since > 0.5:
                return
            await asyncio.sleep(0.05)

    async def go() -> tuple[bool, int, bool]:
        async with (
            _replica(firehose) as url,
            _gateway(url) as (gw, gw_url),
            aiohttp.ClientSession() as s,
            s.post(f"{gw_url}/v1/chat/completions", json=REQUEST) as r,
        ):
            first = await r.content.readany()
            try:  # the client reads nothing for a while
                await asyncio.wait_for(replica_blocked(), 20)
                blocked = True
            except TimeoutError:
                blocked = False
            pool = gw.upstream._h1  # type: ignore[union-attr]
            paused = any(not c.transport.is_reading() for c in pool._open)
            rest = await r.read()  # then everything, to the end
            return blocked, len(first) + len(rest), paused

    blocked, n, paused = uvloop.run(go())
    assert blocked and paused
    assert n == 400 * len(big) + len(DONE)  # nothing lost, nothing added
    assert writes  # the direct path relayed it


def test_a_send_wrapped_by_middleware_is_never_bypassed() -> None:
    class Cycle:
        async def send(self, message: Any) -> None: ...

    cycle = Cycle()

    async def wrapper(message: Any) -> None:
        await cycle.send(message)

    loop = asyncio.new_event_loop()
    loop.close()  # only held, never run
    body = DirectBody(cycle, loop)
    assert body.serves(cycle.send)
    assert not body.serves(wrapper)
    # A watcher over the server's own send hands on a writer for its wrapper only ...
    watched = body.observed(cycle.send, wrapper, lambda chunk: None)
    assert watched is not None and watched.serves(wrapper) and not watched.serves(cycle.send)
    # ... and none over a send that someone else already wrapped.
    assert body.observed(wrapper, wrapper, lambda chunk: None) is None


USAGE = (
    b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":20,"total_tokens":27}}\n\n'
)


async def _paced_with_usage(request: web.Request) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for event in [*EVENTS, USAGE]:
        await resp.write(event)
        await asyncio.sleep(0.01)
    await resp.write(DONE)
    await resp.write_eof()
    return resp


def test_with_api_keys_chunks_go_direct_and_the_tenant_is_charged_from_every_one(
    writes: list[bool], tmp_path: Path
) -> None:
    """Keys on: the edge wraps ``send`` to meter the tenant's tokens; the chunks still go
    straight to the client, shown to the meter on the way, so the charge is the usage the
    replica reported in its last event (27 tokens), not an estimate."""
    kf = KeyFile()
    kf.tenants["acme"] = Tenant(name="acme")
    kf, key = new_key(kf, "acme", "user")
    audit = tmp_path / "audit.jsonl"

    async def go() -> tuple[int, bytes]:
        auth = {"authorization": f"Bearer {key}"}
        async with (
            _replica(_paced_with_usage) as url,
            _gateway(
                url, {"auth": {"required": True}}, keys=KeyStore(kf), audit=AuditLog(audit)
            ) as (_, gw_url),
            aiohttp.ClientSession() as s,
            s.post(f"{gw_url}/v1/chat/completions", json=REQUEST, headers=auth) as r,
        ):
            return r.status, await r.read()

    status, body = uvloop.run(go())
    assert status == 200
    assert body == b"".join(EVENTS) + USAGE + DONE
    assert len(writes) >= 10 and writes[1:] == [False] * (len(writes) - 1)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    charged = [r["tokens"] for r in records if r.get("event") == "request"]
    assert charged == [27]


def test_a_client_that_leaves_mid_stream_drops_the_replica_connection_and_frees_the_slot(
    writes: list[bool],
) -> None:
    async def go() -> tuple[bool, int]:
        dropped = asyncio.Event()

        async def endless(request: web.Request) -> web.StreamResponse:
            await request.read()
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            try:
                for i in range(1000):
                    await resp.write(EVENTS[i % len(EVENTS)])
                    await asyncio.sleep(0.01)
            except (ConnectionResetError, OSError):
                dropped.set()  # the gateway closed the replica's connection
            return resp

        async with _replica(endless) as url, _gateway(url) as (gw, gw_url):
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{gw_url}/v1/chat/completions", json=REQUEST) as r,
            ):
                for _ in range(3):
                    await r.content.readany()
                r.close()  # the client leaves mid-stream
            try:
                await asyncio.wait_for(dropped.wait(), 5)
            except TimeoutError:
                return False, -1
            await asyncio.sleep(0.05)
            record = gw.routers["default"].registry.get("r0")
            assert record is not None
            return True, record.in_flight

    seen_drop, in_flight = uvloop.run(go())
    assert seen_drop
    assert in_flight == 0
    assert writes  # it was relayed directly until the client left


def test_a_client_that_leaves_before_its_answer_starts_is_let_go_at_once() -> None:
    """The connection's loss reaches the request through the protocol (no watcher task): a
    request waiting for a replica's first byte is aborted, one waiting in the queue leaves
    it, both long before the replica would have answered."""

    async def go() -> tuple[int, int, int]:
        arrived, answer = asyncio.Event(), asyncio.Event()

        async def silent(request: web.Request) -> web.StreamResponse:
            await request.read()
            arrived.set()
            await asyncio.wait_for(answer.wait(), 30)  # not before the test is done
            return web.StreamResponse()

        async with (
            _replica(silent) as url,
            _gateway(url, queueing={"max_concurrency": 1}) as (gw, gw_url),
            aiohttp.ClientSession() as s,
        ):
            router = gw.routers["default"]
            first = asyncio.create_task(s.post(f"{gw_url}/v1/chat/completions", json=REQUEST))
            await asyncio.wait_for(arrived.wait(), 5)
            second = asyncio.create_task(s.post(f"{gw_url}/v1/chat/completions", json=REQUEST))
            for _ in range(100):
                if router.queued() == 1:
                    break
                await asyncio.sleep(0.01)
            queued_before = router.queued()
            second.cancel()  # the queued client leaves
            first.cancel()  # the client whose replica has not answered leaves
            await asyncio.gather(first, second, return_exceptions=True)
            for _ in range(100):
                record = router.registry.get("r0")
                if router.queued() == 0 and record and record.in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            record = router.registry.get("r0")
            assert record is not None
            answer.set()
            return queued_before, router.queued(), record.in_flight

    queued_before, queued_after, in_flight = uvloop.run(go())
    assert queued_before == 1
    assert (queued_after, in_flight) == (0, 0)  # seconds before the replica would answer


def test_the_protocol_tells_a_request_its_client_left_only_while_it_runs() -> None:
    class Flow:
        resumed = 0

        def resume_reading(self) -> None:
            self.resumed += 1

    class Cycle:
        def __init__(self) -> None:
            self.disconnected = False
            self.more_body = False
            self.flow = Flow()

        async def send(self, message: Any) -> None: ...

    loop = asyncio.new_event_loop()
    loop.close()  # only held, never run
    calls: list[str] = []
    live = DirectBody(Cycle(), loop)
    assert live.body_complete()
    live.on_client_gone(lambda: calls.append("live"))
    assert live._cycle.flow.resumed == 1  # reading resumes, so that the loss is seen
    live.client_gone()  # the connection closed after the response completed: not marked
    assert calls == []
    live.on_client_gone(lambda: calls.append("live"))
    live._cycle.disconnected = True
    assert not live.body_complete()
    live.client_gone()
    live.client_gone()  # once only
    assert calls == ["live"]
    # Already gone when asked: told at once. A metering writer hands the hook to the one the
    # protocol attached.
    late = DirectBody(Cycle(), loop)
    watched = _observed(late)
    watched.on_client_gone(lambda: calls.append("watched"))
    late._cycle.disconnected = True
    late.client_gone()
    gone = DirectBody(Cycle(), loop)
    gone._cycle.disconnected = True
    gone.on_client_gone(lambda: calls.append("at once"))
    assert calls == ["live", "watched", "at once"]


def _observed(body: DirectBody) -> DirectBody:
    watched = body.observed(body._cycle.send, "wrapper", lambda chunk: None)
    assert watched is not None
    return watched
