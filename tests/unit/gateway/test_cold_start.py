"""Scale from zero at the gateway, in-process against scripted replicas: a streaming request
held while no replica is ready gets a 200 stream of SSE keep-alive comments, then the answer
once a replica is ready; past the hold it ends with an SSE error carrying 503; a non-streaming
request simply waits, or gets 503 with ``Retry-After`` and a message that a replica is
starting. Holds and intervals are tens of milliseconds of real time; nothing asserts speed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.gateway.proxy import KEEPALIVE
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
PLAIN = {**CHAT, "stream": False}


def make(replica: FakeReplica, **queueing: Any) -> Gateway:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, "queueing": queueing}]})
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(cfg, clock=RealClock(), upstream_factory=lambda: upstream, monitor=False)
    # The test plays the autoscaler (it adds the replica): something can start one.
    gw.routers["default"].cold_listeners.append(lambda: None)
    return gw


async def ready_later(gw: Gateway, after_s: float) -> None:
    await asyncio.sleep(after_s)
    router = gw.routers["default"]
    router.add_replica("a", "http://a")
    router.set_state("a", ReplicaState.READY)


def test_a_held_stream_gets_keepalives_then_the_answer() -> None:
    a = FakeReplica()
    gw = make(a, cold_start_keepalive_s=0.01, cold_start_hold_s=30)

    async def go() -> None:
        async with running(gw):
            later = asyncio.ensure_future(ready_later(gw, 0.1))
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            await later
            assert res.status == 200 and res.complete
            assert res.headers["x-shipit-held"] == "cold-start"
            assert res.chunks[0] == KEEPALIVE
            keepalives = [c for c in res.chunks if c == KEEPALIVE]
            assert res.chunks[len(keepalives) :] == a.chunks  # then the answer, unchanged
            assert gw.routers["default"].registry.get("a").in_flight == 0

    asyncio.run(go())


def test_a_held_non_streaming_request_simply_waits() -> None:
    gw = make(FakeReplica(chunks=[b'{"ok": true}']), cold_start_keepalive_s=0.01)

    async def go() -> None:
        async with running(gw):
            later = asyncio.ensure_future(ready_later(gw, 0.05))
            res = await call(gw, "POST", "/v1/chat/completions", PLAIN)
            await later
            assert res.status == 200 and res.json() == {"ok": True}
            assert "x-shipit-held" not in res.headers

    asyncio.run(go())


def test_past_the_hold_a_non_streaming_request_gets_503_with_retry_after() -> None:
    gw = make(FakeReplica(), cold_start_hold_s=0.05, cold_start_retry_after_s=9)

    async def go() -> None:
        async with running(gw):
            gw.routers["default"].add_replica("a", "http://a")  # starting, never ready
            res = await call(gw, "POST", "/v1/chat/completions", PLAIN)
            assert res.status == 503 and res.headers["retry-after"] == "9"
            err = res.json()["error"]
            assert (err["type"], err["code"]) == ("server_error", "service_unavailable")
            assert "1 replica(s) starting" in err["message"]

    asyncio.run(go())


def test_past_the_hold_a_held_stream_ends_with_an_sse_error_saying_unavailable() -> None:
    gw = make(FakeReplica(), cold_start_hold_s=0.08, cold_start_keepalive_s=0.01)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200 and res.complete and res.chunks[0] == KEEPALIVE
            last = res.chunks[-1]
            assert last.endswith(b"data: [DONE]\n\n")
            event = json.loads(last.split(b"\n\n")[0].removeprefix(b"data: "))
            assert event["error"]["code"] == "service_unavailable"
            assert "retry after" in event["error"]["message"]

    asyncio.run(go())
