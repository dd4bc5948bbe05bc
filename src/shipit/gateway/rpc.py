"""The gRPC front door: ``shipit.v1.Inference`` (``shipit/proto/shipit.proto``) in the gateway.

``GrpcDoor.start(gateway)`` runs a ``grpc.aio`` server on the gateway's event loop with the
inference service, the standard health service (``grpc.health.v1.Health``: SERVING while a
replica is ready, as ``GET /health`` answers 200, checked every second; NOT_SERVING otherwise
and once the gateway stops) and server reflection (``grpcurl``, ``grpcui``).
Each call becomes the OpenAI JSON body (typed fields, then ``extra_json`` merged in) and its
metadata the request's headers; ``RequestCore`` does the work; the replica's answer (a JSON
object, or SSE events when streaming) becomes the response messages. Errors end the call with a
status code mapped from the HTTP status (429 RESOURCE_EXHAUSTED, 502/503 UNAVAILABLE, ...), the
HTTP status in the trailing metadata key ``x-shipit-status`` and ``retry-after`` when
admission gives one. A client cancelling the call aborts the replica and frees its slot.
Each call passes the gateway's checks first (``door_auth.admit``: API key in the
``authorization`` or ``x-api-key`` metadata, tenant, ranges, rate limits) and is charged to its
tenant once answered, as an HTTP request is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shipit.core.errors import ShipitError, UnknownAdapterError
from shipit.gateway.door_auth import Admitted, admit, settle
from shipit.gateway.edge import EdgeError
from shipit.gateway.parse import parse_request_async
from shipit.gateway.request_core import BrokenMidStream, Failed, Finished, Rejected, Started
from shipit.gateway.sse import SSEData
from shipit.proto import shipit_pb2, shipit_pb2_grpc
from shipit.proto.convert import to_body, to_message

if TYPE_CHECKING:
    from shipit.gateway.app import Gateway, Hook

SERVICE = "shipit.v1.Inference"
M = TypeVar("M", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for an HTTP status."""
    if status in _CODES:
        return _CODES[status]
    return grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL


def _error_message(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return str(parsed["error"].get("message", body.decode("utf-8", "replace")))
    return body.decode("utf-8", "replace")


class InferenceService(shipit_pb2_grpc.InferenceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.core = gateway.proxy.core

    async def CreateChatCompletion(  # noqa: N802 (the gRPC method's name)
        self, request: shipit_pb2.ChatCompletionRequest, context: Context
    ) -> shipit_pb2.ChatCompletion:
        cls = shipit_pb2.ChatCompletion
        return await self._unary("/v1/chat/completions", request, context, cls)

    async def StreamChatCompletion(  # noqa: N802 (the gRPC method's name)
        self, request: shipit_pb2.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[shipit_pb2.ChatCompletionChunk]:
        async for m in self._stream(
            "/v1/chat/completions", request, context, shipit_pb2.ChatCompletionChunk
        ):
            yield m

    async def CreateCompletion(  # noqa: N802 (the gRPC method's name)
        self, request: shipit_pb2.CompletionRequest, context: Context
    ) -> shipit_pb2.Completion:
        return await self._unary("/v1/completions", request, context, shipit_pb2.Completion)

    async def StreamCompletion(  # noqa: N802 (the gRPC method's name)
        self, request: shipit_pb2.CompletionRequest, context: Context
    ) -> AsyncIterator[shipit_pb2.Completion]:
        async for m in self._stream("/v1/completions", request, context, shipit_pb2.Completion):
            yield m

    async def _unary(self, path: str, request: Message, context: Context, cls: type[M]) -> M:
        answer = b""
        async with aclosing(self._payloads(path, request, context, stream=False)) as payloads:
            async for payload in payloads:
                answer = payload
        return await self._convert(answer, cls, context)

    async def _stream(
        self, path: str, request: Message, context: Context, cls: type[M]
    ) -> AsyncIterator[M]:
        async with aclosing(self._payloads(path, request, context, stream=True)) as payloads:
            async for payload in payloads:
                yield await self._convert(payload, cls, context)

    @staticmethod
    async def _convert(payload: bytes, cls: type[M], context: Context) -> M:
        try:
            return to_message(payload, cls)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc), (("x-shipit-status", "502"),))
            raise  # pragma: no cover  (abort raises)

    async def _payloads(
        self, path: str, request: Message, context: Context, *, stream: bool
    ) -> AsyncGenerator[bytes, None]:
        """The JSON payloads of one call: each stream chunk, or the whole answer; aborts the
        call with the mapped status on an error."""
        gw = self.gw
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        admitted: Admitted | None = None
        try:
            body = to_body(request, stream=stream)
            admitted = admit(gw.security, path, headers, body, client=context.peer())
            body, headers = admitted.body, admitted.headers
            view = await parse_request_async(
                request_id=gw.new_request_id("grpc-"),
                data=admitted.data,
                client_request_id=headers.get("x-request-id") or None,
                path=path,
                headers=headers,
                body=body,
                deployments=gw.deployments,
                adapters=gw.catalog.lazy_replica_adapters(),
                now_s=gw.clock.now(),
                names_known=gw.catalog.names_known,
                tokenizers=gw.prompt_tokenizers,
            )
        except EdgeError as exc:
            gw.metrics.request_done("-", exc.status, "-")
            trailers = [("x-shipit-status", str(exc.status))]
            trailers += [(k.decode(), v.decode()) for k, v in exc.headers if k == b"retry-after"]
            await context.abort(grpc_code(exc.status), exc.message, tuple(trailers))
            return
        except (ShipitError, ValueError) as exc:
            status = 404 if isinstance(exc, UnknownAdapterError) else 400
            gw.metrics.request_done("-", status, "-")
            message = exc.message if isinstance(exc, ShipitError) else str(exc)
            await context.abort(grpc_code(status), message, (("x-shipit-status", str(status)),))
            return
        router = gw.routers[view.deployment]
        router.on_request(view.prompt_tokens_estimate)
        status, policy, tokens = 499, "-", 0
        error: tuple[int, str, int | None] | None = None
        sse = SSEData()
        answer: list[bytes] = []
        try:
            async with aclosing(self.core.run(view, body, router)) as events:
                async for ev in events:
                    if type(ev) is bytes:
                        if stream and status < 400:
                            for payload in sse.feed(ev):
                                yield payload
                        else:
                            answer.append(ev)
                    elif isinstance(ev, Started):
                        status = ev.status
                        meta = [(k.decode(), v.decode()) for k, v in ev.headers]
                        await context.send_initial_metadata(meta[1:])  # not the content type
                    elif isinstance(ev, Finished):
                        status, policy = ev.status, ev.policy
                        tokens = (ev.prompt_tokens or 0) + (ev.output_tokens or 0)
                        if error is None and status >= 400:
                            error = (status, _error_message(b"".join(answer)), None)
                    elif isinstance(ev, Rejected):
                        error = (ev.status, _error_message(ev.body), ev.retry_after_s)
                    elif isinstance(ev, Failed):
                        error = (ev.status, _error_message(ev.body), None)
                    elif isinstance(ev, BrokenMidStream):
                        error = (502, _error_message(ev.body), None)
        finally:
            gw.metrics.request_done(view.deployment, status, policy)
            settle(gw.security, admitted, path, status, tokens or None)
        if error is not None:
            code, message, retry_after_s = error
            trailers = [("x-shipit-status", str(code))]
            if retry_after_s:
                trailers.append(("retry-after", str(retry_after_s)))
            await context.abort(grpc_code(code), message, tuple(trailers))
        if not stream:
            yield b"".join(answer)


class GrpcDoor:
    """The gRPC server of one gateway, started and stopped with its lifespan."""

    def __init__(self, host: str, port: int, *, health_interval_s: float = 1.0) -> None:
        self.host, self.port = host, port
        self.server: grpc.aio.Server | None = None
        self.health: Any = None
        self.health_interval_s = health_interval_s
        self._watch: asyncio.Task[None] | None = None

    async def start(self, gateway: Gateway) -> int:
        """Listen on ``host:port`` (0 picks a free port), with TLS when the gateway has a
        certificate (``gateway.tls``); returns the port."""
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.keepalive_permit_without_calls", 1)]
        )
        shipit_pb2_grpc.add_InferenceServicer_to_server(  # type: ignore[no-untyped-call]
            InferenceService(gateway), server
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = f"{self.host}:{self.port}"
        tls = gateway.config.gateway.tls
        try:
            if tls.cert is not None and tls.key is not None:  # the gateway's certificate
                pair = (Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())
                port = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(
                f"cannot listen for gRPC on {self.host}:{self.port} ({exc}); "
                "choose another --grpc-port"
            ) from None
        await server.start()
        self.server, self.port = server, port
        await self._set_health(gateway)
        self._watch = asyncio.create_task(self._follow_health(gateway))
        return port

    async def _set_health(self, gateway: Gateway) -> None:
        """SERVING while some replica is ready (as ``GET /health`` answers 200), else
        NOT_SERVING."""
        ready = any(r.ready_count() for r in gateway.routers.values())
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def _follow_health(self, gateway: Gateway) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self._set_health(gateway)

    async def stop(self, grace_s: float = 5.0) -> None:
        if self.server is None:
            return
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        self.server = None


def hooks(door: GrpcDoor, gateway: Callable[[], Gateway]) -> tuple[Hook, Hook]:
    """Start/stop hooks for ``create_gateway`` (the gateway is built after its hooks)."""

    async def start() -> None:
        await door.start(gateway())

    async def stop() -> None:
        await door.stop()

    return start, stop
