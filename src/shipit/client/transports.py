"""The client's transports, one per protocol, each to one endpoint: ``HttpTransport`` (the
official ``openai`` client: unary JSON, SSE streams), ``WebSocketTransport`` (one socket,
requests multiplexed by id) and ``GrpcTransport`` (``shipit.v1.Inference``).

Each has ``call(kind, body, headers, timeout_s)``: an async iterator of OpenAI JSON objects
(the whole answer once, or each stream chunk when ``body["stream"]``), raising the errors of
``client.errors``. Connections are pooled and kept alive per transport; ``aclose`` ends them.
They never retry: ``client.aio.AsyncClient`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import grpc
import httpx2
import openai

from shipit.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    parse_retry_after,
)
from shipit.proto import shipit_pb2, shipit_pb2_grpc
from shipit.proto.convert import to_dict, to_request

Kind = Literal["chat", "completion"]
PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class Transport(Protocol):
    endpoint: str

    def call(
        self, kind: Kind, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


def _ssl_context(tls_ca: str | None) -> ssl.SSLContext | None:
    """A context that trusts ``tls_ca`` (a PEM file: a gateway's self-signed certificate)."""
    return ssl.create_default_context(cafile=tls_ca) if tls_ca is not None else None


def _base(endpoint: str) -> str:
    """``http://host:port`` from an endpoint given with or without ``/v1``."""
    base = endpoint.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


# ----- HTTP + SSE, through the openai client ------------------------------------------------


class HttpTransport:
    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None,
        tls_ca: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.endpoint = endpoint
        limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        verify: ssl.SSLContext | bool = _ssl_context(tls_ca) or True
        transport = httpx2.AsyncHTTPTransport(verify=verify, limits=limits, socket_options=NODELAY)
        self._http = httpx2.AsyncClient(transport=transport)
        self.openai = openai.AsyncOpenAI(
            base_url=_base(endpoint) + "/v1",
            api_key=api_key or "-",
            max_retries=0,  # AsyncClient retries, across endpoints
            http_client=self._http,
        )
        self._params = {
            "chat": set(inspect.signature(self.openai.chat.completions.create).parameters),
            "completion": set(inspect.signature(self.openai.completions.create).parameters),
        }

    async def call(
        self, kind: Kind, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        known = self._params[kind]
        kwargs = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        create: Any = (
            self.openai.chat.completions.create
            if kind == "chat"
            else self.openai.completions.create
        )
        try:
            result = await create(
                **kwargs, extra_body=extra or None, extra_headers=headers, timeout=timeout_s
            )
            if not body.get("stream"):
                yield result.model_dump(mode="json", exclude_unset=True)
                return
            async with result as stream:
                async for chunk in stream:
                    yield chunk.model_dump(mode="json", exclude_unset=True)
        except openai.APIStatusError as exc:
            retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
            message = _openai_message(exc)
            raise APIError(
                exc.status_code, message, retry_after_s=retry_after, endpoint=self.endpoint
            ) from None
        except openai.APITimeoutError:
            raise APITimeoutError(f"no answer in {timeout_s:g}s", endpoint=self.endpoint) from None
        except openai.APIConnectionError as exc:
            raise APIConnectionError(str(exc.__cause__ or exc), endpoint=self.endpoint) from None

    async def aclose(self) -> None:
        await self.openai.close()


def _openai_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
    return exc.message


# ----- WebSocket ----------------------------------------------------------------------------


class WebSocketTransport:
    """One socket to ``/v1/ws``, opened on first use and again after it breaks; a reader task
    hands each message to the request it names."""

    def __init__(self, endpoint: str, *, api_key: str | None, tls_ca: str | None = None) -> None:
        self.endpoint = endpoint
        self._ssl: ssl.SSLContext | bool = _ssl_context(tls_ca) or True
        base = _base(endpoint)
        self.url = ("ws" + base[4:] if base.startswith("http") else base) + "/v1/ws"
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()

    async def _socket(self, timeout_s: float) -> aiohttp.ClientWebSocketResponse:
        async with self._lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self._session is None:
                connector = aiohttp.TCPConnector(limit=0)
                self._session = aiohttp.ClientSession(connector=connector)
            try:
                self._ws = await self._session.ws_connect(
                    self.url,
                    headers=self._auth,
                    heartbeat=30.0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=timeout_s),
                    max_msg_size=0,
                    ssl=self._ssl,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise APIConnectionError(
                    f"cannot open {self.url}: {exc}", endpoint=self.endpoint
                ) from None
            sock = self._ws.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reader = asyncio.create_task(self._read(self._ws))
            return self._ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                queue = self._waiting.get(str(data.get("id")))
                if queue is not None:
                    queue.put_nowait(data)
        finally:
            for queue in self._waiting.values():
                queue.put_nowait(None)  # the socket broke: every request in flight fails

    async def call(
        self, kind: Kind, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        ws = await self._socket(timeout_s)
        rid = str(next(self._ids))
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._waiting[rid] = queue
        done = False
        try:
            message = {"type": "request", "id": rid, "path": PATHS[kind], "body": body}
            if headers:
                message["headers"] = headers
            try:
                await ws.send_str(json.dumps(message))
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise APIConnectionError(f"send failed: {exc}", endpoint=self.endpoint) from None
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), timeout_s)
                except TimeoutError:
                    raise APITimeoutError(
                        f"nothing for {timeout_s:g}s", endpoint=self.endpoint
                    ) from None
                if data is None:
                    raise APIConnectionError("the socket closed", endpoint=self.endpoint)
                kind_ = data["type"]
                if kind_ in ("chunk", "response"):
                    yield data["data"]
                elif kind_ == "error":
                    err = data.get("error") or {}
                    raise APIError(
                        int(data.get("status", 500)),
                        str(err.get("message", err)),
                        retry_after_s=data.get("retry_after_s"),
                        endpoint=self.endpoint,
                    )
                elif kind_ == "done":
                    done = True
                    return
        finally:
            self._waiting.pop(rid, None)
            if not done and not ws.closed:  # abandoned or failed: free the gateway's slot
                with contextlib.suppress(Exception):
                    await ws.send_str(json.dumps({"type": "cancel", "id": rid}))

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()


# ----- gRPC ---------------------------------------------------------------------------------

_GRPC_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
}


class GrpcTransport:
    """A channel to ``host:port`` (or ``grpc://host:port``); ``grpcs://host:port`` for a
    gateway with a TLS certificate (verified against the system's roots, or ``tls_ca``, a
    PEM file)."""

    def __init__(self, endpoint: str, *, api_key: str | None, tls_ca: str | None = None) -> None:
        self.endpoint = endpoint
        target = endpoint.split("://", 1)[-1].rstrip("/")
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 0)]
        if endpoint.startswith("grpcs://") or tls_ca is not None:
            roots = Path(tls_ca).read_bytes() if tls_ca is not None else None
            creds = grpc.ssl_channel_credentials(roots)
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = shipit_pb2_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        self._auth = [("authorization", f"Bearer {api_key}")] if api_key else []

    async def call(
        self, kind: Kind, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        stream = bool(body.get("stream"))
        cls = shipit_pb2.ChatCompletionRequest if kind == "chat" else shipit_pb2.CompletionRequest
        request: Any = to_request(body, cls)
        metadata = self._auth + [(k.lower(), v) for k, v in headers.items()]
        stub = self._stub
        try:
            if stream:
                method = stub.StreamChatCompletion if kind == "chat" else stub.StreamCompletion
                call = method(request, metadata=metadata, timeout=timeout_s)
                try:
                    async for msg in call:
                        yield to_dict(msg)
                finally:
                    call.cancel()  # a no-op once finished; frees the gateway's slot if not
            else:
                method = stub.CreateChatCompletion if kind == "chat" else stub.CreateCompletion
                yield to_dict(await method(request, metadata=metadata, timeout=timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, self.endpoint, timeout_s) from None

    async def aclose(self) -> None:
        await self._channel.close(None)


def _grpc_error(exc: grpc.aio.AioRpcError, endpoint: str, timeout_s: float) -> Exception:
    pairs: Any = exc.trailing_metadata() or ()
    trailers = {k: v for k, v in pairs if isinstance(v, str)}
    status = trailers.get("x-shipit-status")
    code = exc.code()
    if status is not None:
        retry_after = parse_retry_after(trailers.get("retry-after"))
        return APIError(
            int(status), exc.details() or code.name, retry_after_s=retry_after, endpoint=endpoint
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(f"no answer in {timeout_s:g}s", endpoint=endpoint)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return APIConnectionError(exc.details() or code.name, endpoint=endpoint)
    return APIError(_GRPC_STATUS.get(code, 500), exc.details() or code.name, endpoint=endpoint)
