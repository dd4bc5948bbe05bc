"""The WebSocket front door: many OpenAI requests multiplexed on one socket at ``/v1/ws``.

Each text frame is one JSON message. The client sends

- ``{"type": "request", "id": ID, "body": {...}}``: an OpenAI chat completion (or, with
  ``"path": "/v1/completions"``, a completion); ``"headers": {...}`` adds per-request headers
  (``x-shipit-priority``, ``x-request-id``, ...) to those of the handshake. ``ID`` is the
  client's own string or integer, unique among its requests in flight on this socket.
- ``{"type": "cancel", "id": ID}``: abort that request (the replica sees its connection
  drop and the slot is given back).
- ``{"type": "ping", "data": ANY}``: answered by ``{"type": "pong", "data": ANY}``.

and gets back, for each request, the same events as an SSE stream: ``held`` (waiting for a
replica to start), ``chunk`` (``data``: one stream chunk, exactly the JSON object an SSE
``data:`` line carries), ``response`` (``data``: the whole answer of a request that did not
stream), ``error`` (``status``, the OpenAI ``error`` object, ``retry_after_s`` when admission
says when to come back), and always ``done`` last (``status``, ``outcome``: ``ok``, ``failed``,
``client_error``, ``rejected`` or ``cancelled``, and ``replica`` when one answered).

Backpressure: what is sent to a socket goes through a bounded buffer; when the client reads
slower than replicas write, the requests of that socket stop reading their replicas (TCP then
slows the replicas down) instead of the gateway buffering without limit. Control answers
(``pong``, errors, ``done``) never wait behind that bound, so a cancel always gets through; a
client that floods control messages without reading is disconnected (close code 1008).
Each request passes the gateway's checks as an HTTP request does (``door_auth.admit``: the
API key from the handshake's ``Authorization`` or ``x-api-key`` header, or from the request's
own ``headers``; tenant, ranges, rate limits) and is charged to its tenant once answered.
The work is ``RequestCore``'s; this module only speaks the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import aclosing
from typing import Any

from shipit.config.gateway import DeploymentConfig
from shipit.core import openai_errors as oe
from shipit.core.clock import Clock
from shipit.core.errors import ShipitError
from shipit.core.views import RequestView
from shipit.gateway.auth import Security
from shipit.gateway.catalog import Catalog
from shipit.gateway.door_auth import Admitted, admit, settle
from shipit.gateway.edge import EdgeError
from shipit.gateway.errors import kind_of
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.parse import parse_request_async
from shipit.gateway.prompt_tokens import PromptTokenizer
from shipit.gateway.proxy import Receive, Scope, Send
from shipit.gateway.request_core import (
    BrokenMidStream,
    Failed,
    Finished,
    Held,
    Rejected,
    RequestCore,
    Started,
)
from shipit.gateway.sse import SSEData
from shipit.services.router import RouterService

WS_PATH = "/v1/ws"
PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
POLICY_VIOLATION = 1008


class Outbox:
    """The bounded send buffer of one socket: ``put`` waits while ``limit`` messages are
    queued; ``put_control`` does not wait (answers that must get through) but refuses beyond
    twice the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[str] = deque()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: str) -> None:
        while len(self._items) >= self.limit:
            self._not_full.clear()
            await self._not_full.wait()
        self._items.append(item)
        self._not_empty.set()

    def put_control(self, item: str) -> bool:
        if len(self._items) >= 2 * self.limit:
            return False
        self._items.append(item)
        self._not_empty.set()
        return True

    async def get(self) -> str:
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        item = self._items.popleft()
        if len(self._items) < self.limit:
            self._not_full.set()
        return item


def _raw_json(payload: bytes) -> str:
    """A replica's JSON payload, embedded as is when it looks like an object (no re-encoding
    on the hot path), else as a JSON string."""
    text = payload.decode("utf-8", "replace")
    stripped = text.strip()
    if stripped[:1] == "{" and stripped[-1:] == "}":
        return stripped
    return json.dumps(text)


def _error_object(body: bytes, status: int) -> str:
    """The ``error`` object of an OpenAI error body; any other body becomes one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return json.dumps(parsed["error"])
    text = body.decode("utf-8", "replace")
    return json.dumps(oe.error_body(text, oe.kind_for_status(status))["error"])


def _retry_after(exc: EdgeError) -> int | None:
    for key, value in exc.headers:
        if key == b"retry-after":
            return int(value)
    return None


def _error(id_: str, status: int, error: str, retry_after_s: int | None = None) -> str:
    extra = f',"retry_after_s":{retry_after_s}' if retry_after_s else ""
    return f'{{"type":"error","id":{id_},"status":{status},"error":{error}{extra}}}'


_NO_SUCH_REQUEST = oe.PATH_NOT_FOUND  # 404 not_found: nothing by that id to cancel


def _invalid(
    id_: str, message: str, kind: oe.ErrorKind = oe.INVALID_VALUE, param: str | None = None
) -> str:
    """An error of our own, in the OpenAI vocabulary HTTP uses (string ``type`` and ``code``)."""
    return _error(id_, kind.status, json.dumps(oe.error_body(message, kind, param)["error"]))


def _done(id_: str, status: int, outcome: str, replica: str | None) -> str:
    rep = json.dumps(replica)
    return f'{{"type":"done","id":{id_},"status":{status},"outcome":"{outcome}","replica":{rep}}}'


class WebSocketDoor:
    """Serves ``/v1/ws`` for a gateway; one ``_Socket`` per connection."""

    def __init__(
        self,
        *,
        core: RequestCore,
        routers: Mapping[str, RouterService],
        deployments: Mapping[str, DeploymentConfig],
        metrics: GatewayMetrics,
        clock: Clock,
        catalog: Catalog,
        new_id: Callable[[str], str],
        security: Security | None = None,
        send_buffer: int = 256,
        max_in_flight: int = 256,
        tokenizers: Mapping[str, PromptTokenizer] | None = None,
    ) -> None:
        self.core = core
        self.catalog = catalog
        self.routers = routers
        self.deployments = deployments
        self.tokenizers = tokenizers or {}
        self.metrics = metrics
        self.clock = clock
        self.security = security
        self.send_buffer = send_buffer
        self.max_in_flight = max_in_flight
        self._new_id = new_id

    def new_id(self) -> str:
        return self._new_id("ws-")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"] != WS_PATH:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        await send({"type": "websocket.accept"})
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        sock = _Socket(self, headers, send)
        await sock.serve(receive)


class _Socket:
    def __init__(self, door: WebSocketDoor, headers: dict[str, str], send: Send) -> None:
        self.door = door
        self.headers = {
            k: v for k, v in headers.items() if not k.startswith("sec-websocket") and k != "host"
        }
        self.send = send
        self.outbox = Outbox(door.send_buffer)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelled: set[str] = set()
        self.closing = False

    async def serve(self, receive: Receive) -> None:
        writer = asyncio.create_task(self._write())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                if not self._on_message(text):
                    await self.send(
                        {"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "flood"}
                    )
                    break
        finally:
            self.closing = True
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self) -> None:
        while True:
            text = await self.outbox.get()
            try:
                await self.send({"type": "websocket.send", "text": text})
            except Exception:  # the client is gone; the reader sees the disconnect
                return

    def _on_message(self, text: str) -> bool:
        """Handle one client message; False when the socket must close."""
        try:
            msg = json.loads(text)
        except ValueError as exc:
            return self.outbox.put_control(
                _invalid("null", f"the message is not JSON: {exc}", oe.INVALID_JSON)
            )
        if not isinstance(msg, dict):
            return self.outbox.put_control(
                _invalid("null", "a message must be a JSON object", oe.INVALID_TYPE)
            )
        kind = msg.get("type")
        raw_id = msg.get("id")
        if kind == "ping":
            return self.outbox.put_control(
                json.dumps({"type": "pong", "data": msg.get("data")}, separators=(",", ":"))
            )
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or raw_id == "":
            got = json.dumps(raw_id)
            return self.outbox.put_control(
                _invalid(
                    "null",
                    f"`id` must be a non-empty string or an integer, got {got}",
                    param="id",
                )
            )
        id_ = json.dumps(raw_id)
        if kind == "cancel":
            task = self.tasks.get(id_)
            if task is None:
                return self.outbox.put_control(
                    _invalid(
                        id_,
                        f"no request {id_} in flight on this socket to cancel",
                        oe.PATH_NOT_FOUND,
                    )
                )
            self.cancelled.add(id_)
            task.cancel()
            return True
        if kind != "request":
            return self.outbox.put_control(
                _invalid(
                    id_, f"unknown message type {kind!r}: use request, cancel or ping", param="type"
                )
            )
        return self._start(id_, msg)

    def _start(self, id_: str, msg: dict[str, Any]) -> bool:
        if id_ in self.tasks:
            return self.outbox.put_control(
                _invalid(id_, f"request {id_} is already in flight on this socket; use a new id")
            )
        if len(self.tasks) >= self.door.max_in_flight:
            return self.outbox.put_control(
                _invalid(
                    id_,
                    f"{len(self.tasks)} requests already in flight on this socket (the limit); "
                    "wait for one to finish or open another socket",
                    oe.RATE_LIMITED,
                )
            )
        path = msg.get("path", "/v1/chat/completions")
        body = msg.get("body")
        extra = msg.get("headers") or {}
        if path not in PATHS:
            return self.outbox.put_control(
                _invalid(
                    id_,
                    f"`path` {path!r} is not served; use one of {sorted(PATHS)}",
                    param="path",
                )
            )
        if not isinstance(body, dict):
            return self.outbox.put_control(
                _invalid(
                    id_,
                    "`body` must be the OpenAI request as a JSON object",
                    oe.INVALID_TYPE,
                    "body",
                )
            )
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            return self.outbox.put_control(
                _invalid(
                    id_, "`headers` must map header names to strings", oe.INVALID_TYPE, "headers"
                )
            )
        headers = {**self.headers, **{str(k).lower(): v for k, v in extra.items()}}
        task = asyncio.ensure_future(self._run(id_, path, body, headers))
        self.tasks[id_] = task
        return True

    async def _run(
        self, id_: str, path: str, data: dict[str, Any], headers: dict[str, str]
    ) -> None:
        door = self.door
        body = json.dumps(data).encode()
        status, policy, deployment = 499, "-", "-"
        tokens: int | None = None
        admitted: Admitted | None = None
        try:
            if door.security is not None:
                try:
                    admitted = admit(door.security, path, headers, body)
                except EdgeError as exc:
                    status = exc.status
                    err = _error_object(exc.body(), status)
                    self.outbox.put_control(_error(id_, status, err, _retry_after(exc)))
                    self.outbox.put_control(_done(id_, status, "rejected", None))
                    return
                body, headers = admitted.body, admitted.headers
            try:
                view = await parse_request_async(
                    request_id=door.new_id(),
                    client_request_id=headers.get("x-request-id") or None,
                    path=path,
                    headers=headers,
                    body=body,
                    deployments=door.deployments,
                    data=admitted.data if admitted is not None else None,
                    adapters=door.catalog.lazy_replica_adapters(),
                    now_s=door.clock.now(),
                    names_known=door.catalog.names_known,
                    tokenizers=door.tokenizers,
                )
            except ShipitError as exc:
                kind = kind_of(exc)
                status = kind.status
                self.outbox.put_control(_invalid(id_, exc.message, kind, exc.field))
                self.outbox.put_control(_done(id_, status, "client_error", None))
                return
            deployment = view.deployment
            router = door.routers[view.deployment]
            router.on_request(view.prompt_tokens_estimate)
            status, policy, tokens = await self._relay(id_, view, body, router)
        except asyncio.CancelledError:
            if self.closing or id_ not in self.cancelled:
                raise  # the socket closed, or the server stops: nobody to tell
            self.outbox.put_control(_done(id_, 499, "cancelled", None))
        finally:
            self.tasks.pop(id_, None)
            self.cancelled.discard(id_)
            door.metrics.request_done(deployment, status, policy)
            if admitted is not None and door.security is not None:
                settle(door.security, admitted, path, status, tokens)

    async def _relay(
        self, id_: str, view: RequestView, body: bytes, router: RouterService
    ) -> tuple[int, str, int | None]:
        """Write one request's events; returns the status, the routing policy and the
        tokens of the answer (when the replica reported them)."""
        outbox = self.outbox
        stream = view.stream
        sse = SSEData()
        answer: list[bytes] = []
        error_sent = False
        started_status = 0
        prefix = f'{{"type":"chunk","id":{id_},"data":'
        async with aclosing(self.door.core.run(view, body, router)) as events:
            async for ev in events:
                if type(ev) is bytes:
                    if stream and started_status < 400:
                        for payload in sse.feed(ev):
                            await outbox.put(prefix + _raw_json(payload) + "}")
                    else:
                        answer.append(ev)
                elif isinstance(ev, Started):
                    started_status = ev.status
                elif isinstance(ev, Finished):
                    whole = b"".join(answer)
                    if not error_sent and ev.status >= 400:
                        outbox.put_control(_error(id_, ev.status, _error_object(whole, ev.status)))
                    elif not stream and not error_sent:
                        await outbox.put(
                            f'{{"type":"response","id":{id_},"data":{_raw_json(whole)}}}'
                        )
                    outbox.put_control(_done(id_, ev.status, ev.outcome, ev.replica_id))
                    used = (ev.prompt_tokens or 0) + (ev.output_tokens or 0)
                    return ev.status, ev.policy, used or None
                elif isinstance(ev, Held):
                    await outbox.put(f'{{"type":"held","id":{id_}}}')
                elif isinstance(ev, Rejected):
                    error_sent = True
                    err = _error_object(ev.body, ev.status)
                    outbox.put_control(_error(id_, ev.status, err, ev.retry_after_s))
                elif isinstance(ev, Failed | BrokenMidStream):
                    error_sent = True
                    code = ev.status if isinstance(ev, Failed) else 502
                    outbox.put_control(_error(id_, code, _error_object(ev.body, code)))
        raise RuntimeError("the request core ended without Finished")  # pragma: no cover
