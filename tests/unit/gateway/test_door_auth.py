"""API keys, tenant limits and accounting apply to the WebSocket and gRPC front doors as they
do to HTTP: no key is refused (401) before any replica sees the request, a key in the
handshake, in a request's own headers or in gRPC metadata is accepted, a tenant's rate limit
refuses with Retry-After, and each answer is charged to its tenant and audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.gateway.rpc import GrpcDoor
from shipit.proto import shipit_pb2, shipit_pb2_grpc
from shipit.services.audit import AuditLog
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
USAGE = (
    b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],'
    b'"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}'
)


def make(tmp: Path, **tenant: Any) -> tuple[Gateway, FakeReplica, str]:
    kf = KeyFile()
    kf.tenants["acme"] = Tenant(name="acme", **tenant)
    kf, key = new_key(kf, "acme", "user")
    cfg = parse_config(
        {"gateway": {"host": "0.0.0.0"}, "deployments": [{"model": "m", "replicas": 0}]}
    )
    replica = FakeReplica(chunks=[USAGE])
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(
        cfg,
        clock=FakeClock(),
        upstream_factory=lambda: upstream,
        monitor=False,
        keys=KeyStore(kf),
        audit=AuditLog(tmp / "audit.jsonl"),
    )
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    return gw, replica, key


async def ws_session(
    gw: Gateway, handshake: dict[str, str], requests: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One socket driven through the app: each request in turn, until its ``done``."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            sent.append(json.loads(message["text"]))
            if sent[-1]["type"] == "done":
                done.set()

    headers = [(k.encode(), v.encode()) for k, v in handshake.items()]
    scope = {"type": "websocket", "path": "/v1/ws", "headers": headers}
    await inbox.put({"type": "websocket.connect"})
    door = asyncio.create_task(gw(scope, inbox.get, send))
    for req in requests:
        done.clear()
        await inbox.put({"type": "websocket.receive", "text": json.dumps(req)})
        await asyncio.wait_for(done.wait(), 10)
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(door, 10)
    return sent


def test_websocket_requests_need_a_key_and_are_charged_to_the_tenant(tmp_path: Path) -> None:
    gw, replica, key = make(tmp_path, requests_per_min=2)

    async def go() -> None:
        async with running(gw):
            anon = await ws_session(gw, {}, [{"type": "request", "id": 1, "body": CHAT}])
            assert [m["type"] for m in anon] == ["error", "done"]
            assert anon[0]["status"] == 401 and anon[0]["error"]["code"] == "invalid_api_key"
            assert anon[1]["outcome"] == "rejected" and replica.bodies == []

            bearer = {"authorization": f"Bearer {key}"}
            keyed = await ws_session(
                gw,
                bearer,
                [
                    {"type": "request", "id": 1, "body": CHAT},
                    {"type": "request", "id": 2, "body": CHAT, "headers": {"x-api-key": key}},
                    {"type": "request", "id": 3, "body": CHAT},
                ],
            )
            done = [m for m in keyed if m["type"] == "done"]
            assert [m["status"] for m in done] == [200, 200, 429]
            refused = next(m for m in keyed if m["type"] == "error")
            assert refused["id"] == 3 and refused["retry_after_s"] >= 1
            assert len(replica.bodies) == 2
            assert gw.security.state("acme").spent_tokens == 100  # 2 x usage.total_tokens

    asyncio.run(go())
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [a["tokens"] for a in audit if a["event"] == "request"] == [50, 50]


def test_a_key_in_the_request_headers_alone_is_enough(tmp_path: Path) -> None:
    gw, _replica, key = make(tmp_path)

    async def go() -> None:
        async with running(gw):
            req = {"type": "request", "id": "a", "body": CHAT, "headers": {"x-api-key": key}}
            msgs = await ws_session(gw, {}, [req])
            assert [m["type"] for m in msgs] == ["response", "done"]
            assert msgs[0]["data"]["usage"]["total_tokens"] == 50

    asyncio.run(go())


def test_grpc_calls_need_a_key_and_are_charged_to_the_tenant(tmp_path: Path) -> None:
    gw, replica, key = make(tmp_path)
    request = shipit_pb2.ChatCompletionRequest(
        model="m", messages=[shipit_pb2.ChatMessage(role="user", content="hi")]
    )

    async def go() -> None:
        door = GrpcDoor("127.0.0.1", 0)
        async with running(gw):
            port = await door.start(gw)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = shipit_pb2_grpc.InferenceStub(channel)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.CreateChatCompletion(request)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "didn't provide an API key" in (err.value.details() or "")
                    assert replica.bodies == []
                    meta = (("authorization", f"Bearer {key}"),)
                    answer = await stub.CreateChatCompletion(request, metadata=meta)
                    assert answer.usage.total_tokens == 50
            finally:
                await door.stop(0)
            assert gw.security.state("acme").spent_tokens == 50

    asyncio.run(go())
