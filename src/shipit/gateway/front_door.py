"""The global front door's ASGI app: one address in front of the planes of a live fleet.

Serves ``GET /health`` (200 while a plane serves, else 503), ``GET /shipit/fleet`` (the
driver's status: planes, failover changes, route decisions with reasons), ``GET /metrics``
(``shipit_front_door_*``), ``GET /v1/models[/{id}]`` (from a serving plane) and relays every other
``POST`` (``/v1/chat/completions``, ``/v1/completions``, ``/tokenize``, ...) to the plane that
``services.front_door.FrontDoor.route`` chooses for the client's place
(``front_door_views.client_place``: ``x-shipit-client-utc-offset``, ``x-shipit-region``,
``x-shipit-residency``).

A request that has not started (connect refused, reset before its first response byte, or a
502/503 from the plane's gateway) goes on to the next plane of the decision's order, so a plane
that dies loses no request that had not started; with none left the answer is a 503 naming why.
Once the answer has started its bytes are relayed as they arrive; a plane that fails after
that ends the answer as the gateway ends a broken one: an SSE error event (code 502) and
``data: [DONE]`` for a stream, a cut body otherwise. Every answer carries ``x-shipit-plane``
and ``x-shipit-global-route`` (the routing reason code of the plane that served). A client
that leaves cancels the relay (the plane sees its connection drop). Raw ASGI, as the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from shipit.config.gateway import ShipitConfig, parse_config
from shipit.core import openai_errors as oe
from shipit.gateway.direct import DIRECT_BODY
from shipit.gateway.errors import error_json
from shipit.gateway.leaving import ClientWatch
from shipit.gateway.metrics import CONTENT_TYPE
from shipit.gateway.proxy import DONE_TAIL, Message, Receive, Scope, Send, send_json
from shipit.services.front_door import FrontDoor
from shipit.services.front_door_views import (
    PLANE_HEADER,
    ROUTE_HEADER,
    ClientPlace,
    ClientPlaceError,
    client_place,
)
from shipit.services.upstream import MidStreamError, UpstreamError, UpstreamResponse

log = logging.getLogger("shipit.front_door")

# Not forwarded either way: hop-by-hop, or set by the next hop itself.
_HOP = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "proxy-connection",
        "date",
        "server",
    }
)
RETRY_STATUSES = frozenset({502, 503})  # the plane's gateway could not serve it at all


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
        if not message.get("more_body"):
            return b"".join(parts)


class FrontDoorApp:
    """The app ``gateway.server.serve`` runs; ``config`` carries the edge limits it reads."""

    def __init__(self, door: FrontDoor, config: ShipitConfig | None = None) -> None:
        self.door = door
        self.config = config or parse_config({}, source="front door")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.door.start()
                except Exception as exc:
                    log.exception("front door start failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.door.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if method in ("GET", "HEAD"):
            if path == "/health":
                serving = self.door.serving()
                body = json.dumps({"serving": list(serving)}).encode()
                await send_json(send, 200 if serving else 503, body)
            elif path == "/shipit/fleet":
                await send_json(send, 200, json.dumps(self.door.status()).encode())
            elif path == "/metrics":
                headers = [(b"content-type", CONTENT_TYPE.encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": self.door.render_metrics()})
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                await self._models(path, send)
            else:
                msg = f"{method} {path}: no such endpoint; the front door serves POST /v1/... "
                msg += "(relayed to a plane), /v1/models, /health, /shipit/fleet and /metrics"
                await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg))
        elif method == "POST":
            await self._relay_guarded(scope, receive, send)
        else:
            msg = f"{method} is not allowed on {path}; the front door relays POST and answers GET"
            await send_json(send, 405, error_json(oe.METHOD_NOT_ALLOWED, msg))

    async def _models(self, path: str, send: Send) -> None:
        """From the first serving plane that answers (the planes serve the same models)."""
        for plane in self.door.serving():
            try:
                status, body = await self.door.upstream.get(
                    self.door.url(plane) + path, timeout_s=10.0
                )
            except UpstreamError:
                continue
            extra = [(PLANE_HEADER.encode(), plane.encode())]
            await send_json(send, status, body, extra)
            return
        msg = "no plane is serving; GET /shipit/fleet says why"
        await send_json(send, 503, error_json(oe.UNAVAILABLE, msg))

    async def _relay_guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.config.gateway.limits.max_body_bytes
        body = await _read_body(receive, limit)
        if body is None:
            msg = f"the request body is over the front door's limit of {limit} bytes"
            await send_json(send, 413, error_json(oe.REQUEST_TOO_LARGE, msg, "body"))
            return
        ended = [False]
        direct = scope.get("extensions", {}).get(DIRECT_BODY)
        watch = ClientWatch(receive, direct, lambda: not ended[0])
        try:
            await self._relay(scope, body, send, ended)
        except asyncio.CancelledError:
            if not watch.left:
                raise  # cancelled by the server, not by the client
        finally:
            ended[0] = True
            watch.stop()

    async def _relay(self, scope: Scope, body: bytes, send: Send, ended: list[bool]) -> None:
        door = self.door
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        try:
            place = client_place(headers, door.places, door.default_offset_h)
        except ClientPlaceError as exc:
            await send_json(send, 400, error_json(oe.INVALID_VALUE, exc.message, exc.header))
            return
        token = door.demand_opened(place)  # the client region's demand, for placement
        try:
            await self._relay_from(place, scope, headers, body, send, ended)
        finally:
            door.demand_closed(token)

    async def _relay_from(
        self,
        place: ClientPlace,
        scope: Scope,
        headers: dict[str, str],
        body: bytes,
        send: Send,
        ended: list[bool],
    ) -> None:
        door = self.door
        forward = {k: v for k, v in headers.items() if k not in _HOP}
        client = scope.get("client")
        if client:
            prior = forward.get("x-forwarded-for")
            forward["x-forwarded-for"] = f"{prior}, {client[0]}" if prior else str(client[0])
        query: bytes = scope.get("query_string", b"")
        target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        tried: set[str] = set()
        first_reason: str | None = None
        failures: list[str] = []
        while True:
            decision = door.route(place, frozenset(tried))
            first_reason = first_reason or decision.reason_code
            plane = decision.plane
            if plane is None:
                why = decision.reason
                if failures:
                    why = f"{'; '.join(failures)}; then {why}"
                route = [(ROUTE_HEADER.encode(), b"no_plane"), (b"retry-after", b"1")]
                await send_json(send, 503, error_json(oe.UNAVAILABLE, why), route)
                door.metrics.requests.labels("none", first_reason, "503").inc()
                return
            door.opened(plane)
            try:
                resp = await door.upstream.open(
                    door.url(plane) + target,
                    body,
                    forward,
                    first_byte_timeout_s=door.first_byte_timeout_s,
                )
            except UpstreamError as exc:
                door.closed(plane)
                if exc.kind == "timeout":  # the plane may still be working on it: no retry
                    msg = f"plane {plane} did not answer: {exc.message}"
                    extra = [(PLANE_HEADER.encode(), plane.encode())]
                    await send_json(send, 504, error_json(oe.TIMEOUT, msg), extra)
                    door.metrics.requests.labels(plane, first_reason, "504").inc()
                    return
                tried.add(plane)
                failures.append(f"plane {plane} failed before answering ({exc.message})")
                door.metrics.retries.labels(plane, exc.kind).inc()
                continue
            except BaseException:
                door.closed(plane)
                raise
            if resp.status in RETRY_STATUSES and len(decision.order) > 1:
                resp.close()
                door.closed(plane)
                tried.add(plane)
                failures.append(f"plane {plane} answered {resp.status}")
                door.metrics.retries.labels(plane, f"http_{resp.status}").inc()
                continue
            break
        status = 499  # unless the answer ends: the client left
        try:
            status = await self._answer(plane, decision.reason_code, resp, send, ended)
        finally:
            door.closed(plane)
            door.metrics.requests.labels(plane, first_reason, str(status)).inc()

    async def _answer(
        self, plane: str, reason: str, resp: UpstreamResponse, send: Send, ended: list[bool]
    ) -> int:
        """Relay one started answer; the status to count (502 when it broke midway)."""
        door = self.door
        headers: list[tuple[bytes, bytes]] = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.items()
            if k.lower() not in _HOP
        ]
        headers.append((PLANE_HEADER.encode(), plane.encode()))
        headers.append((ROUTE_HEADER.encode(), reason.encode()))
        sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        door.served(plane)
        done = False
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            try:
                async for chunk in resp.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except MidStreamError as exc:
                resp.close()
                done = True
                door.metrics.midstream_errors.labels(plane).inc()
                msg = f"plane {plane} failed mid-stream ({exc}); the answer is incomplete"
                tail = b"data: " + error_json(oe.UPSTREAM_ERROR, msg) + b"\n\n" + DONE_TAIL
                ended[0] = True
                await send(_last(tail if sse else b""))
                return 502
            resp.release()
            done = True
            ended[0] = True
            await send(_last(b""))
            return resp.status
        finally:
            if not done:
                resp.close()  # the client left: the plane sees its connection drop


def _last(body: bytes) -> Message:
    out: dict[str, Any] = {"type": "http.response.body", "body": body, "more_body": False}
    return out
