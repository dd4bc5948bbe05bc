"""The WebSocket front door (``/v1/ws``) served by uvicorn on 127.0.0.1 in front of scripted
replicas: several requests multiplexed on one socket, non-streamed answers, cancel by id (the
replica's connection is dropped and the slot comes back), ping/pong, errors as messages, a
closed socket aborting its requests, and the bounded send buffer holding replicas back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway
from shipit.gateway.server import bind_socket, make_server
from shipit.gateway.ws import Outbox
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def make(replicas: dict[str, FakeReplica], **deployment: Any) -> Gateway:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    gw = create_gateway(cfg, clock=RealClock(), upstream_factory=lambda: upstream, monitor=False)
    for rid in replicas:
        gw.routers["default"].add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
    return gw


@contextlib.asynccontextmanager
async def serving(gw: Gateway) -> AsyncIterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(gw, graceful_shutdown_s=1, log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/v1/ws"
    finally:
        server.should_exit = True
        await task


async def until(ws: aiohttp.ClientWebSocketResponse, n_done: int) -> list[dict[str, Any]]:
    """Messages received until ``n_done`` ``done`` messages have arrived."""
    out: list[dict[str, Any]] = []
    while n_done:
        msg = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
        out.append(msg)
        n_done -= msg["type"] == "done"
    return out


def in_flight(gw: Gateway, rid: str) -> int:
    return gw.routers["default"].registry.get(rid).in_flight


def test_two_streams_multiplexed_on_one_socket_get_their_own_chunks_then_done() -> None:
    a = FakeReplica(
        chunks=[
            b'data: {"choices":[{"index":0,"delta":{"content":"one"}}]}\n\ndata: {"cho',
            b'ices":[{"index":0,"delta":{"content":"two"}}]}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_json({"type": "request", "id": "x", "body": CHAT})
            await ws.send_json({"type": "request", "id": 7, "body": CHAT})
            msgs = await until(ws, 2)
        for id_ in ("x", 7):
            mine = [m for m in msgs if m["id"] == id_]
            assert [m["type"] for m in mine] == ["chunk", "chunk", "done"]
            assert [m["data"]["choices"][0]["delta"]["content"] for m in mine[:2]] == [
                "one",
                "two",
            ]
            assert mine[-1] == {
                "type": "done",
                "id": id_,
                "status": 200,
                "outcome": "ok",
                "replica": "a",
            }
        assert len(a.bodies) == 2 and json.loads(a.bodies[0])["stream"] is True
        assert in_flight(gw, "a") == 0

    asyncio.run(go())


def test_a_request_that_does_not_stream_gets_one_response_message() -> None:
    answer = {"id": "c1", "choices": [{"index": 0, "message": {"content": "Paris"}}]}
    a = FakeReplica(chunks=[json.dumps(answer)[:10].encode(), json.dumps(answer)[10:].encode()])
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            body = {**CHAT, "stream": False}
            await ws.send_json({"type": "request", "id": "r", "body": body})
            msgs = await until(ws, 1)
        assert [m["type"] for m in msgs] == ["response", "done"]
        assert msgs[0]["data"] == answer

    asyncio.run(go())


def test_cancel_by_id_aborts_the_replica_and_frees_the_slot_other_requests_go_on() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_json({"type": "request", "id": "one", "body": CHAT})
            await ws.send_json({"type": "request", "id": "two", "body": CHAT})
            for _ in range(500):
                if in_flight(gw, "a") == 2:
                    break
                await asyncio.sleep(0.01)
            assert in_flight(gw, "a") == 2
            await ws.send_json({"type": "cancel", "id": "one"})
            msgs = await until(ws, 1)
            assert msgs == [
                {
                    "type": "done",
                    "id": "one",
                    "status": 499,
                    "outcome": "cancelled",
                    "replica": None,
                }
            ]
            assert a.aborted == 1 and in_flight(gw, "a") == 1
            hold.set()  # the other request goes on
            msgs = await until(ws, 1)
            assert [m["type"] for m in msgs] == ["chunk", "chunk", "done"]
            assert msgs[-1]["id"] == "two" and msgs[-1]["outcome"] == "ok"
            assert in_flight(gw, "a") == 0
            # The socket is still usable after a cancel.
            await ws.send_json({"type": "ping", "data": {"n": 1}})
            assert json.loads(await ws.receive_str()) == {"type": "pong", "data": {"n": 1}}

    asyncio.run(go())


def test_protocol_ping_is_answered_with_a_pong() -> None:
    gw = make({"a": FakeReplica()})

    async def go() -> None:
        async with (
            serving(gw) as url,
            aiohttp.ClientSession() as s,
            s.ws_connect(url, autoping=False) as ws,
        ):
            await ws.ping(b"abc")
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"abc"

    asyncio.run(go())


def test_bad_messages_get_errors_that_say_what_to_do_and_the_socket_stays_open() -> None:
    gw = make({"a": FakeReplica(status=400, chunks=[b'{"error": {"message": "bad temp"}}'])})

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s, s.ws_connect(url) as ws:

            async def ask(message: str) -> dict[str, Any]:
                await ws.send_str(message)
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
                return reply

            e = await ask("not json")
            assert e["type"] == "error" and e["id"] is None and "not JSON" in e["error"]["message"]
            e = await ask(json.dumps({"type": "request", "body": CHAT}))
            assert "`id` must be" in e["error"]["message"]
            e = await ask(json.dumps({"type": "cancel", "id": "nope"}))
            assert e["status"] == 404 and "no request" in e["error"]["message"]
            e = await ask(json.dumps({"type": "request", "id": 1, "body": "text"}))
            assert e["error"]["param"] == "body"
            e = await ask(json.dumps({"type": "subscribe", "id": 1}))
            assert "use request, cancel or ping" in e["error"]["message"]
            bad = {"model": "m", "messages": [], "stream": True}
            await ws.send_json({"type": "request", "id": 2, "body": {**bad, "model": 3}})
            msgs = await until(ws, 1)
            assert [m["type"] for m in msgs] == ["error", "done"]
            assert msgs[0]["status"] == 400 and msgs[0]["error"]["param"] == "model"
            # A replica's own 4xx: relayed as an error, not retried.
            await ws.send_json({"type": "request", "id": 3, "body": CHAT})
            msgs = await until(ws, 1)
            assert msgs[0] == {
                "type": "error",
                "id": 3,
                "status": 400,
                "error": {"message": "bad temp"},
            }
            assert msgs[1]["outcome"] == "client_error"

    asyncio.run(go())


def test_a_closed_socket_aborts_its_requests_and_frees_their_slots() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s:
            async with s.ws_connect(url) as ws:
                await ws.send_json({"type": "request", "id": 1, "body": CHAT})
                for _ in range(500):
                    if in_flight(gw, "a"):
                        break
                    await asyncio.sleep(0.01)
                assert in_flight(gw, "a") == 1
            for _ in range(500):
                if not in_flight(gw, "a"):
                    break
                await asyncio.sleep(0.01)
            assert in_flight(gw, "a") == 0 and a.aborted == 1

    asyncio.run(go())


def test_a_slow_reader_holds_the_replica_back_at_the_send_buffer_bound() -> None:
    """The door driven directly: ``send`` blocks (a client not reading); the request stops
    reading its replica once the buffer holds ``send_buffer`` messages, a cancel still gets
    through, and everything flows once the client reads again."""
    n = 50
    pulled = 0

    class Counted(list[bytes]):
        def __iter__(self) -> Iterator[bytes]:
            nonlocal pulled
            for chunk in super().__iter__():
                pulled += 1
                yield chunk

    chunks = Counted([b'data: {"n":%d}\n\n' % i for i in range(n)] + [b"data: [DONE]\n\n"])
    a = FakeReplica(chunks=chunks)
    gw = make({"a": a})
    gw.websocket.send_buffer = 4

    async def go() -> None:
        from shipit.gateway.app import running

        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reading = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await reading.wait()
                sent.append(json.loads(message["text"]))

        async with running(gw):
            await inbox.put({"type": "websocket.connect"})
            scope = {"type": "websocket", "path": "/v1/ws", "headers": []}
            door = asyncio.create_task(gw.websocket(scope, inbox.get, send))
            await inbox.put(
                {
                    "type": "websocket.receive",
                    "text": json.dumps({"type": "request", "id": 1, "body": CHAT}),
                }
            )
            for _ in range(200):
                await asyncio.sleep(0)
            # One message in the writer's hands, ``send_buffer`` queued, the request waiting.
            assert in_flight(gw, "a") == 1 and sent == []
            assert pulled < 10  # the writer's one, the buffer's 4, the one waiting to go in
            await inbox.put({"type": "websocket.receive", "text": '{"type":"ping","data":1}'})
            for _ in range(50):
                await asyncio.sleep(0)
            assert in_flight(gw, "a") == 1
            reading.set()
            for _ in range(2000):
                if any(m["type"] == "done" for m in sent):
                    break
                await asyncio.sleep(0)
            chunk_ns = [m["data"]["n"] for m in sent if m["type"] == "chunk"]
            assert chunk_ns == list(range(n))
            assert {"type": "pong", "data": 1} in sent
            assert sent[-1]["type"] == "done" and in_flight(gw, "a") == 0
            await inbox.put({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(door, 10)

    asyncio.run(go())


def test_outbox_bounds_data_but_not_control_messages() -> None:
    async def go() -> None:
        box = Outbox(2)
        await box.put("a")
        await box.put("b")
        blocked = asyncio.ensure_future(box.put("c"))
        await asyncio.sleep(0)
        assert not blocked.done() and len(box) == 2
        assert box.put_control("ping") and len(box) == 3
        assert box.put_control("x") and len(box) == 4
        assert box.put_control("y") is False  # twice the limit: refused
        assert [await box.get() for _ in range(2)] == ["a", "b"]
        await asyncio.sleep(0)
        assert not blocked.done()  # control messages count against the bound too
        assert await box.get() == "ping"
        await asyncio.sleep(0)
        assert blocked.done()
        assert [await box.get() for _ in range(2)] == ["x", "c"]

    asyncio.run(go())


def test_errors_carry_the_openai_vocabulary_string_code_and_type_as_http_does() -> None:
    gw = make(
        {"a": FakeReplica(status=500, chunks=[b"boom, not json"])}, retries={"max_attempts": 1}
    )

    async def go() -> None:
        async with serving(gw) as url, aiohttp.ClientSession() as s, s.ws_connect(url) as ws:

            async def ask(message: str) -> dict[str, Any]:
                await ws.send_str(message)
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
                return reply

            def word(e: dict[str, Any]) -> tuple[int, str, str]:
                return e["status"], e["error"]["type"], e["error"]["code"]

            assert word(await ask("not json")) == (400, "invalid_request_error", "invalid_json")
            cancel = await ask(json.dumps({"type": "cancel", "id": "nope"}))
            assert word(cancel) == (404, "not_found_error", "not_found")
            body = await ask(json.dumps({"type": "request", "id": 1, "body": "text"}))
            assert word(body) == (400, "invalid_request_error", "invalid_type")
            await ws.send_json({"type": "request", "id": 2, "body": {**CHAT, "model": "nope"}})
            unknown = (await until(ws, 1))[0]
            assert word(unknown) == (404, "not_found_error", "model_not_found")
            # A replica's answer that is no OpenAI error body gets a kind by its status.
            await ws.send_json({"type": "request", "id": 3, "body": CHAT})
            relayed = (await until(ws, 1))[0]
            assert word(relayed) == (500, "server_error", "internal_error")
            assert relayed["error"]["message"] == "boom, not json"

    asyncio.run(go())
