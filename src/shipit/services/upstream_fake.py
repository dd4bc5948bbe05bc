"""An in-process ``Upstream`` for tests: scripted replicas, no sockets.

Each URL prefix maps to a ``FakeReplica`` whose behaviour a test sets: answer chunks, fail to
connect, time out, answer a status, or break mid-stream after some chunks. It records every
request and every abort. It must never be used to serve real traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from shipit.services.upstream import MidStreamError, UpstreamError, UpstreamResponse


@dataclass
class FakeReplica:
    chunks: list[bytes] = field(
        default_factory=lambda: [
            b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    status: int = 200
    fail: str | None = None  # "connect" | "timeout" | "protocol"
    break_after_chunks: int | None = None
    hold: asyncio.Event | None = None  # when set: wait for it before the first chunk
    health_status: int = 200
    metrics_text: str = ""
    models: list[str] = field(default_factory=list)  # adapter names
    kv_pages: list[dict[str, object]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    admin_calls: list[tuple[str, object]] = field(default_factory=list)
    admin_headers: list[dict[str, str]] = field(default_factory=list)  # of every get/post_json
    headers: list[dict[str, str]] = field(default_factory=list)  # of every proxied request
    aborted: int = 0


class _FakeResponse:
    def __init__(self, replica: FakeReplica) -> None:
        self._replica = replica
        self.status = replica.status
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream"}
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        r = self._replica
        if r.hold is not None:
            await r.hold.wait()
        for i, chunk in enumerate(r.chunks):
            if r.break_after_chunks is not None and i >= r.break_after_chunks:
                raise MidStreamError("ServerDisconnectedError: the replica went away")
            if self.closed:
                return
            yield chunk
            await asyncio.sleep(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._replica.aborted += 1

    def release(self) -> None:
        self.closed = True


class FakeUpstream:
    def __init__(self, replicas: Mapping[str, FakeReplica]) -> None:
        self.replicas = dict(replicas)
        self.opened: list[str] = []

    def _find(self, url: str) -> FakeReplica:
        for base, replica in self.replicas.items():
            if url.startswith(base):
                return replica
        raise UpstreamError("connect", f"cannot connect: nothing listens at {url}")

    async def open(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        first_byte_timeout_s: float,
    ) -> UpstreamResponse:
        replica = self._find(url)
        self.opened.append(url)
        replica.bodies.append(body)
        replica.headers.append(dict(headers))
        if replica.fail is not None:
            raise UpstreamError(replica.fail, f"injected {replica.fail} failure")
        return _FakeResponse(replica)

    async def get(
        self, url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        replica = self._find(url)
        replica.admin_headers.append(dict(headers or {}))
        if replica.fail is not None:
            raise UpstreamError(replica.fail, "injected")
        if url.endswith("/health"):
            return replica.health_status, b""
        if url.endswith("/metrics"):
            return 200, replica.metrics_text.encode()
        if url.endswith("/v1/models"):
            data = [{"id": "base", "parent": None}] + [
                {"id": m, "parent": "base"} for m in replica.models
            ]
            return 200, json.dumps({"data": data}).encode()
        if "/v1/kv_events" in url:
            page = (
                replica.kv_pages.pop(0) if replica.kv_pages else {"events": [], "truncated": False}
            )
            return 200, json.dumps(page).encode()
        return 404, b""

    async def post_json(
        self,
        url: str,
        payload: object,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        replica = self._find(url)
        replica.admin_headers.append(dict(headers or {}))
        replica.admin_calls.append((url, payload))
        if replica.fail is not None:
            raise UpstreamError(replica.fail, "injected")
        if url.endswith("/v1/load_lora_adapter") and isinstance(payload, dict):
            replica.models.append(str(payload["lora_name"]))
        return 200, b"Success"

    async def close(self) -> None:
        return None
