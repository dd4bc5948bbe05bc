"""Senders for ``shipit bench --protocol``: the same requests and records over HTTP without
streaming (``http``), WebSocket (``ws``) and gRPC (``grpc``); ``sse`` is ``client.HttpSender``.

Each times the request the way ``HttpSender`` does (one clock reading per arrival, the
content chunks' times, usage when the server sends it) so that reports compare across
protocols. ``http``: the whole answer arrives at once, so its TTFT is its E2E. ``ws``: one
socket per 64 requests in flight at most, requests multiplexed by id (``/v1/ws``). ``grpc``:
one channel to ``host:port`` (the gateway's ``--grpc-port``), ``StreamChatCompletion`` or
``StreamCompletion``. ``open_sender`` picks one and closes its connections afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from time import perf_counter_ns
from typing import Any

import aiohttp
import grpc
import httpx

from shipit.bench.client import (
    ClientPool,
    HttpSender,
    Outcome,
    Sender,
    StreamState,
    build_body,
    make_record,
    take_chunk,
)
from shipit.bench.config import TargetConfig
from shipit.bench.records import Turn
from shipit.proto import shipit_pb2, shipit_pb2_grpc
from shipit.proto.convert import to_dict, to_request

WS_STREAMS_PER_SOCKET = 64


class _Base:
    def __init__(self, target: TargetConfig) -> None:
        self.target = target
        self.headers = {"content-type": "application/json"}
        if target.api_key:
            self.headers["authorization"] = f"Bearer {target.api_key}"

    def _outcome(
        self,
        session: int,
        turn: int,
        model: str,
        current: Turn,
        scheduled_ns: int | None,
        start_ns: int,
        st: StreamState,
        error: str | None,
        detail: str | None,
    ) -> Outcome:
        end_ns = perf_counter_ns()
        record = make_record(
            session, turn, model, current, scheduled_ns, start_ns, end_ns, st, error, detail
        )
        return Outcome(record, "".join(st.text or ()))


class UnarySender(_Base):
    """HTTP, ``stream: false``: one JSON answer."""

    def __init__(self, pool: ClientPool, target: TargetConfig) -> None:
        super().__init__(target)
        self._pool = pool
        self._url = target.endpoint_url()

    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome:
        body = build_body(self.target, model, history, current, stream=False)
        st = StreamState(content_ns=[], text=[] if keep_text else None)
        error = detail = None
        client = self._pool.acquire()
        start_ns = perf_counter_ns()
        try:
            response = await client.post(self._url, content=body, headers=self.headers)
            if response.status_code != 200:
                error, detail = f"http_{response.status_code}", response.text[:200]
            else:
                take_chunk(response.json(), perf_counter_ns(), st)
                st.done = True
        except (httpx.HTTPError, ValueError) as exc:
            error, detail = type(exc).__name__, str(exc)[:200] or type(exc).__name__
        self._pool.release(client)
        return self._outcome(
            session, turn, model, current, scheduled_ns, start_ns, st, error, detail
        )


class WsSender(_Base):
    """WebSocket ``/v1/ws``; sockets opened as needed, each carrying up to
    ``WS_STREAMS_PER_SOCKET`` requests at once."""

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        base = target.endpoint_url().split("/v1/", 1)[0]
        self.url = "ws" + base[4:] + "/v1/ws" if base.startswith("http") else base + "/v1/ws"
        self.path = "/v1/chat/completions" if target.endpoint == "chat" else "/v1/completions"
        self._session: aiohttp.ClientSession | None = None
        self._sockets: list[tuple[aiohttp.ClientWebSocketResponse, set[str]]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._queues: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self._ids = itertools.count()

    async def _socket(self, rid: str) -> aiohttp.ClientWebSocketResponse:
        for ws, active in self._sockets:
            if len(active) < WS_STREAMS_PER_SOCKET and not ws.closed:
                active.add(rid)
                return ws
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        auth = {k: v for k, v in self.headers.items() if k == "authorization"}
        ws = await self._session.ws_connect(self.url, headers=auth, max_msg_size=0)
        self._sockets.append((ws, {rid}))
        self._readers.append(asyncio.create_task(self._read(ws)))
        return ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                data = json.loads(msg.data)
                queue = self._queues.get(str(data.get("id")))
                if queue is not None:
                    queue.put_nowait(data)
        finally:
            for queue in self._queues.values():
                queue.put_nowait(None)

    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome:
        body = build_body(self.target, model, history, current).decode()
        rid = str(next(self._ids))
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._queues[rid] = queue
        st = StreamState(content_ns=[], text=[] if keep_text else None)
        error = detail = None
        start_ns = perf_counter_ns()
        try:
            ws = await self._socket(rid)
            message = f'{{"type":"request","id":"{rid}","path":"{self.path}","body":{body}}}'
            await ws.send_str(message)
            while True:
                data = await asyncio.wait_for(queue.get(), self.target.timeout_s)
                now = perf_counter_ns()
                if data is None:
                    error, detail = "disconnect", "the socket closed"
                    break
                if data["type"] in ("chunk", "response"):
                    take_chunk(data["data"], now, st)
                elif data["type"] == "error":
                    error = f"http_{data.get('status')}"
                    detail = str(data.get("error"))[:200]
                elif data["type"] == "done":
                    st.done = True
                    break
        except (aiohttp.ClientError, OSError) as exc:
            error, detail = "connect", str(exc)[:200] or type(exc).__name__
        except TimeoutError:
            error, detail = "timeout", f"nothing for {self.target.timeout_s:g}s"
        finally:
            self._queues.pop(rid, None)
            for _, active in self._sockets:
                active.discard(rid)
        return self._outcome(
            session, turn, model, current, scheduled_ns, start_ns, st, error, detail
        )

    async def aclose(self) -> None:
        for ws, _ in self._sockets:
            await ws.close()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()


class GrpcSender(_Base):
    """gRPC ``shipit.v1.Inference`` at ``host:port`` (``--url``; a scheme is ignored)."""

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        host = target.url.split("://", 1)[-1].split("/", 1)[0]
        self._channel = grpc.aio.insecure_channel(host)
        self._stub = shipit_pb2_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        self._meta = [(k, v) for k, v in self.headers.items() if k == "authorization"]
        self.chat = target.endpoint == "chat"

    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome:
        body = json.loads(build_body(self.target, model, history, current))
        if self.chat:
            request: Any = to_request(body, shipit_pb2.ChatCompletionRequest)
            method = self._stub.StreamChatCompletion
        else:
            request = to_request(body, shipit_pb2.CompletionRequest)
            method = self._stub.StreamCompletion
        st = StreamState(content_ns=[], text=[] if keep_text else None)
        error = detail = None
        start_ns = perf_counter_ns()
        try:
            call = method(request, metadata=self._meta, timeout=self.target.timeout_s)
            async for msg in call:
                take_chunk(to_dict(msg), perf_counter_ns(), st)
            st.done = True
        except grpc.aio.AioRpcError as exc:
            error, detail = f"grpc_{exc.code().name.lower()}", (exc.details() or "")[:200]
        return self._outcome(
            session, turn, model, current, scheduled_ns, start_ns, st, error, detail
        )

    async def aclose(self) -> None:
        await self._channel.close(None)


@contextlib.asynccontextmanager
async def open_sender(target: TargetConfig) -> AsyncIterator[Sender]:
    """The sender for ``target.protocol``, its connections closed on exit."""
    async with ClientPool(timeout_s=target.timeout_s) as pool:
        if target.protocol == "sse":
            yield HttpSender(pool, target)
        elif target.protocol == "http":
            yield UnarySender(pool, target)
        else:
            sender = WsSender(target) if target.protocol == "ws" else GrpcSender(target)
            try:
                yield sender
            finally:
                await sender.aclose()
