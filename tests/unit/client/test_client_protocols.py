"""``shipit.client`` against a real gateway on 127.0.0.1 (scripted replicas), over each
protocol, sync and async: the same answers and chunks whatever the protocol, admission's 429
raised with its Retry-After, a stream abandoned midway freeing the replica's slot, and
failover from an endpoint that does not answer."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from shipit.client import APIError, AsyncClient, Client, RetryPolicy, ShipitClientError
from shipit.services.upstream_fake import FakeReplica
from support.gateway_thread import serve_gateway

MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}
CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Pa"}}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"ris"},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
PROTOCOLS = ["http", "ws", "grpc"]
NO_WAIT = RetryPolicy(max_retries=2, base_s=0.0, max_s=0.0)


def wait_until(cond: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_same_answer_and_chunks_over_every_protocol_sync(protocol: Any) -> None:
    a = FakeReplica(chunks=[json.dumps(ANSWER).encode()])
    with serve_gateway({"a": a}) as gw, Client(gw.endpoint(protocol), protocol=protocol) as c:
        answer = c.chat(model="m", messages=MESSAGES, max_tokens=4)
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
        assert answer["usage"]["total_tokens"] == 3 and answer["created"] == 1
        a.chunks = CHUNKS
        chunks = list(c.chat_stream(model="m", messages=MESSAGES))
        assert [ch["choices"][0]["delta"]["content"] for ch in chunks] == ["Pa", "ris"]
        assert chunks[1]["choices"][0]["finish_reason"] == "stop"
        sent = [json.loads(b) for b in a.bodies]
        assert [s["stream"] for s in sent] == [False, True]
        assert sent[0]["max_tokens"] == 4 and sent[0]["messages"] == MESSAGES


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_admission_429_is_raised_with_retry_after_once_retries_run_out(protocol: Any) -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    cfg = {"queueing": {"max_concurrency": 1, "max_queue": 0}}
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    with serve_gateway({"a": a}, **cfg) as gw:

        async def go() -> None:
            retry = RetryPolicy(max_retries=1, base_s=0.0, max_s=0.0)
            ep = gw.endpoint(protocol)
            async with AsyncClient(ep, protocol=protocol, retry=retry, sleep=sleep) as c:
                first = c.chat_stream(model="m", messages=MESSAGES)
                task = asyncio.ensure_future(anext(first))
                for _ in range(1000):
                    if gw.in_flight("a"):
                        break
                    await asyncio.sleep(0.01)
                with pytest.raises(APIError) as err:
                    await c.chat(model="m", messages=MESSAGES)
                assert err.value.status == 429 and err.value.retry_after_s == 1
                assert slept == [1.0]  # one retry, after the server's Retry-After
                gw.call(hold.set)
                assert (await task)["choices"][0]["delta"].get("content", "") == ""
                await first.aclose()

        asyncio.run(go())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_leaving_a_stream_early_frees_the_replica_slot(protocol: Any) -> None:
    n = 200
    chunks = [b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'] * n
    a = FakeReplica(chunks=chunks)
    with serve_gateway({"a": a}) as gw, Client(gw.endpoint(protocol), protocol=protocol) as c:
        for i, _chunk in enumerate(c.chat_stream(model="m", messages=MESSAGES)):
            if i == 2:
                break
        assert wait_until(lambda: gw.in_flight("a") == 0)
        # The same client goes on working afterwards.
        a.chunks = CHUNKS
        assert len(list(c.chat_stream(model="m", messages=MESSAGES))) == 2


def _dead_endpoint(protocol: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_failover_to_the_next_endpoint_when_one_does_not_answer(protocol: Any) -> None:
    a = FakeReplica(chunks=CHUNKS)
    with serve_gateway({"a": a}) as gw:
        endpoints = [_dead_endpoint(protocol), gw.endpoint(protocol)]
        with Client(endpoints, protocol=protocol, retry=NO_WAIT, timeout_s=10) as c:
            chunks = list(c.chat_stream(model="m", messages=MESSAGES))
            assert len(chunks) == 2 and len(a.bodies) == 1
            list(c.chat_stream(model="m", messages=MESSAGES))  # goes to the live one first
            assert len(a.bodies) == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
# Now and then a TLS connection the client refused is left to the garbage collector by the
# server side of this in-test gateway (an asyncio transport); it is collected here, inside
# the test, so that the warning cannot land on a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_gateway_with_a_self_signed_certificate_over_every_protocol(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    a = FakeReplica(chunks=CHUNKS)
    tls = {"tls": {"cert": str(cert), "key": str(key)}}
    with serve_gateway({"a": a}, gateway=tls) as gw:
        assert gw.http.startswith("https://")
        for protocol, ep in (("http", gw.http), ("ws", gw.http), ("grpc", f"grpcs://{gw.grpc}")):
            with Client(ep, protocol=protocol, tls_ca=str(cert), retry=NO_WAIT) as c:  # type: ignore[arg-type]
                chunks = list(c.chat_stream(model="m", messages=MESSAGES))
                assert len(chunks) == 2, protocol
            with (
                Client(ep, protocol=protocol, retry=NO_WAIT) as c,
                pytest.raises(  # type: ignore[arg-type]
                    ShipitClientError
                ),
            ):
                list(c.chat_stream(model="m", messages=MESSAGES))  # not trusted: refused
    gc.collect()
