"""The gRPC front door on 127.0.0.1 in front of scripted replicas: unary and server-streaming
chat and completions, the body the replica gets, metadata both ways, errors as status codes
with the HTTP status and Retry-After in trailers, a cancelled call freeing the replica's slot,
the health service and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.gateway.rpc import GrpcDoor, grpc_code
from shipit.proto import shipit_pb2, shipit_pb2_grpc
from shipit.proto.convert import to_body, to_dict, to_request
from shipit.services.upstream_fake import FakeReplica, FakeUpstream


def make(replicas: dict[str, FakeReplica], **deployment: Any) -> Gateway:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    gw = create_gateway(cfg, clock=RealClock(), upstream_factory=lambda: upstream, monitor=False)
    for rid in replicas:
        gw.routers["default"].add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
    return gw


@contextlib.asynccontextmanager
async def serving(gw: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    door = GrpcDoor("127.0.0.1", 0)
    async with running(gw):
        port = await door.start(gw)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield channel
        finally:
            await door.stop(0)


def chat(**extra: Any) -> shipit_pb2.ChatCompletionRequest:
    return shipit_pb2.ChatCompletionRequest(
        model="m", messages=[shipit_pb2.ChatMessage(role="user", content="hi")], **extra
    )


def in_flight(gw: Gateway, rid: str) -> int:
    return gw.routers["default"].registry.get(rid).in_flight


def test_streamed_chat_arrives_as_chunks_with_route_metadata() -> None:
    a = FakeReplica(
        chunks=[
            b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":',
            b'{"role":"assistant","content":"Par"},"logprobs":null}]}\n\n',
            b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"is"},'
            b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,'
            b'"total_tokens":5}}\n\ndata: [DONE]\n\n',
        ]
    )
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as channel:
            stub = shipit_pb2_grpc.InferenceStub(channel)
            call = stub.StreamChatCompletion(chat(max_tokens=4, seed=7, extra_json='{"n": 1}'))
            chunks = [c async for c in call]
            meta = dict(await call.initial_metadata())
            assert meta["x-shipit-replica"] == "a"
            assert meta["x-shipit-route"] == "least_outstanding/least_loaded"
        assert [c.choices[0].delta.content for c in chunks] == ["Par", "is"]
        assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role
        assert chunks[1].choices[0].finish_reason == "stop" and chunks[1].usage.total_tokens == 5
        sent = json.loads(a.bodies[0])
        assert sent == {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "seed": 7,
            "n": 1,
            "stream": True,
        }

    asyncio.run(go())


def test_unary_chat_and_completion_parse_the_replicas_json() -> None:
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "extra": {}},
    }
    text = {"id": "y", "object": "text_completion", "choices": [{"index": 0, "text": " 42"}]}
    a = FakeReplica(chunks=[json.dumps(answer).encode()])
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as channel:
            stub = shipit_pb2_grpc.InferenceStub(channel)
            got = await stub.CreateChatCompletion(chat(temperature=0.0))
            assert got.choices[0].message.content == "Paris" and got.usage.total_tokens == 4
            assert got.created == 5 and got.choices[0].finish_reason == "stop"
            a.chunks = [json.dumps(text).encode()]
            req = shipit_pb2.CompletionRequest(model="m", prompt="6*7=", stop=["\n"])
            done = await stub.CreateCompletion(req)
            assert done.choices[0].text == " 42"
        first, second = (json.loads(b) for b in a.bodies)
        assert first["stream"] is False and first["temperature"] == 0.0
        assert second == {"model": "m", "prompt": "6*7=", "stop": ["\n"], "stream": False}

    asyncio.run(go())


def test_a_replicas_4xx_becomes_invalid_argument_with_the_status_in_trailers() -> None:
    a = FakeReplica(status=400, chunks=[b'{"error": {"message": "temperature too high"}}'])
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as channel:
            stub = shipit_pb2_grpc.InferenceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateChatCompletion(chat())
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "temperature too high"
            assert dict(err.value.trailing_metadata() or ())["x-shipit-status"] == "400"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateChatCompletion(chat(extra_json="[1]"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "extra_json must be a JSON object" in (err.value.details() or "")
            assert len(a.bodies) == 1

    asyncio.run(go())


def test_admission_refusal_is_resource_exhausted_with_retry_after() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw = make({"a": a}, queueing={"max_concurrency": 1, "max_queue": 0})

    async def go() -> None:
        async with serving(gw) as channel:
            stub = shipit_pb2_grpc.InferenceStub(channel)
            first = stub.StreamChatCompletion(chat())
            for _ in range(500):
                if in_flight(gw, "a"):
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateChatCompletion(chat())
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(err.value.trailing_metadata() or ())
            assert trailers["x-shipit-status"] == "429" and trailers["retry-after"] == "1"
            hold.set()
            assert len([c async for c in first]) == 2

    asyncio.run(go())


def test_cancelling_a_stream_aborts_the_replica_and_frees_the_slot() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw = make({"a": a})

    async def go() -> None:
        async with serving(gw) as channel:
            stub = shipit_pb2_grpc.InferenceStub(channel)
            call = stub.StreamChatCompletion(chat())
            for _ in range(500):
                if in_flight(gw, "a"):
                    break
                await asyncio.sleep(0.01)
            assert in_flight(gw, "a") == 1
            call.cancel()
            for _ in range(500):
                if not in_flight(gw, "a"):
                    break
                await asyncio.sleep(0.01)
            assert in_flight(gw, "a") == 0 and a.aborted == 1

    asyncio.run(go())


def test_health_and_reflection() -> None:
    gw = make({"a": FakeReplica()})

    async def go() -> None:
        async with serving(gw) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "shipit.v1.Inference"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = [r async for r in refl.ServerReflectionInfo(iter([ask]))]
            names = {s.name for s in replies[0].list_services_response.service}
            assert {"shipit.v1.Inference", "grpc.health.v1.Health"} <= names

    asyncio.run(go())


def test_status_mapping_and_body_conversion() -> None:
    assert grpc_code(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_code(503) == grpc.StatusCode.UNAVAILABLE
    assert grpc_code(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_code(422) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_code(500) == grpc.StatusCode.INTERNAL
    msg = shipit_pb2.ChatCompletionRequest(
        model="m",
        messages=[shipit_pb2.ChatMessage(role="assistant", content="", name="bot")],
        max_tokens=0,
        extra_json='{"max_tokens": 9, "tools": []}',
    )
    # An explicitly set 0 is kept, and typed fields win over extra_json.
    assert json.loads(to_body(msg, stream=True)) == {
        "model": "m",
        "messages": [{"role": "assistant", "content": "", "name": "bot"}],
        "max_tokens": 0,
        "tools": [],
        "stream": True,
    }


def test_an_openai_body_round_trips_through_the_request_message() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": "\n",
        "seed": 3,
        "temperature": 0.5,
        "tools": [{"type": "function"}],
        "max_tokens": None,
        "stream": True,
    }
    msg = to_request(body, shipit_pb2.ChatCompletionRequest)
    assert (
        msg.seed == 3
        and list(msg.stop) == ["\n"]
        and json.loads(msg.extra_json) == {"tools": [{"type": "function"}]}
    )
    assert json.loads(to_body(msg, stream=False)) == {
        **{k: v for k, v in body.items() if k != "max_tokens"},
        "stop": ["\n"],
        "stream": False,
    }
    # A prompt that is not one string (token ids) does not fit the typed field: extra_json.
    parts = to_request({"model": "m", "prompt": [1, 2]}, shipit_pb2.CompletionRequest)
    assert parts.prompt == "" and json.loads(parts.extra_json) == {"prompt": [1, 2]}
    chunk = shipit_pb2.ChatCompletionChunk(id="c", created=5)
    assert to_dict(chunk) == {"id": "c", "created": 5}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_grpc_uses_the_gateways_tls_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    a = FakeReplica(chunks=[b'{"choices":[{"index":0,"message":{"content":"ok"}}]}'])
    cfg = parse_config(
        {
            "gateway": {"tls": {"cert": str(cert), "key": str(key)}},
            "deployments": [{"model": "m", "replicas": 0}],
        }
    )
    upstream = FakeUpstream({"http://a": a})
    gw = create_gateway(cfg, clock=RealClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        door = GrpcDoor("127.0.0.1", 0)
        async with running(gw):
            port = await door.start(gw)
            try:
                creds = grpc.ssl_channel_credentials(cert.read_bytes())
                async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
                    stub = shipit_pb2_grpc.InferenceStub(channel)
                    answer = await stub.CreateChatCompletion(chat())
                    assert answer.choices[0].message.content == "ok"
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                    with pytest.raises(grpc.aio.AioRpcError):
                        await shipit_pb2_grpc.InferenceStub(plain).CreateChatCompletion(
                            chat(), timeout=5
                        )
            finally:
                await door.stop(0)

    asyncio.run(go())


def test_health_follows_the_replicas_readiness() -> None:
    gw = make({})

    async def go() -> None:
        door = GrpcDoor("127.0.0.1", 0, health_interval_s=0.05)
        async with running(gw):
            port = await door.start(gw)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    health = health_pb2_grpc.HealthStub(channel)

                    async def status() -> int:
                        ask = health_pb2.HealthCheckRequest(service="shipit.v1.Inference")
                        return int((await health.Check(ask)).status)

                    assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
                    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
                    for _ in range(200):
                        if await status() == health_pb2.HealthCheckResponse.SERVING:
                            break
                        await asyncio.sleep(0.02)
                    assert await status() == health_pb2.HealthCheckResponse.SERVING
            finally:
                await door.stop(0)

    asyncio.run(go())
