"""A non-streamed answer's first byte is its last: a replica (shipit's, vLLM's) sends the
response headers with the body when the whole answer is done. So ``first_byte_timeout_s``
bounds streams only; plain answers wait up to ``unary_timeout_s``. Driven against a real HTTP
replica on 127.0.0.1 that takes longer than ``first_byte_timeout_s`` to answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from shipit.config.gateway import RetryConfig, parse_config
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import create_gateway, running
from shipit.services.upstream import AiohttpUpstream
from support.asgi import call

ANSWER = {"id": "c1", "object": "chat.completion", "choices": [], "usage": None}


@asynccontextmanager
async def slow_replica(delay_s: float) -> AsyncIterator[str]:
    """Answers every chat completion, streamed or not, as one JSON body after ``delay_s``."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay_s)
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def ask(stream: bool, retries: dict[str, Any]) -> int:
    cfg = parse_config(
        {"deployments": [{"model": "m", "replicas": 0, "retries": {"max_attempts": 1, **retries}}]}
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with slow_replica(0.3) as url:
        gw = create_gateway(cfg, upstream_factory=AiohttpUpstream, monitor=False)
        gw.routers["default"].add_replica("a", url, state=ReplicaState.READY)
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", body)
            if res.status == 200:
                assert json.loads(res.body) == ANSWER
            return res.status


def test_a_non_streamed_answer_slower_than_first_byte_timeout_gets_a_200() -> None:
    status = asyncio.run(ask(False, {"first_byte_timeout_s": 0.05}))
    assert status == 200


def test_a_non_streamed_answer_slower_than_unary_timeout_gets_a_504() -> None:
    retries = {"first_byte_timeout_s": 30, "unary_timeout_s": 0.05}
    assert asyncio.run(ask(False, retries)) == 504


def test_a_stream_whose_first_byte_is_late_still_gets_a_504() -> None:
    assert asyncio.run(ask(True, {"first_byte_timeout_s": 0.05})) == 504


def test_the_response_timeout_is_first_byte_for_streams_and_unary_for_plain_answers() -> None:
    r = RetryConfig(first_byte_timeout_s=7, unary_timeout_s=90)
    assert (r.response_timeout_s(stream=True), r.response_timeout_s(stream=False)) == (7, 90)
    assert RetryConfig().unary_timeout_s == 600
