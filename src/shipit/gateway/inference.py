"""The inference endpoints (``/v1/chat/completions``, ``/v1/completions``): the handler.

``handle`` is what the route table calls, after the edge: the body, a request id, the request's
view (``gateway.parse``), the arrival told to the router and offered to a shadow rollout
(``arrived``), then the answer through the proxy with a watch on the client (``forward``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from shipit.core.errors import ShipitError
from shipit.core.views import RequestView
from shipit.gateway.direct import DIRECT_BODY
from shipit.gateway.edge import PARSED_BODY
from shipit.gateway.leaving import ClientWatch
from shipit.gateway.parse import parse_request_async
from shipit.gateway.proxy import Guard, Receive, Scope, Send
from shipit.services.router import RouterService

if TYPE_CHECKING:
    from collections.abc import Callable

    from shipit.gateway.app import Gateway

    App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def read_whole(receive: Receive) -> bytes:
    """The request's body, every ``http.request`` message of it."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def handle(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    body = await read_whole(receive)
    rid, headers = gw.request_ids(scope)
    try:
        view = await parse_request_async(
            request_id=rid,
            client_request_id=headers.get("x-request-id") or None,
            path=scope["path"],
            headers=headers,
            body=body,
            data=scope.get(PARSED_BODY),
            deployments=gw.deployments,
            adapters=gw.catalog.lazy_replica_adapters(),
            now_s=gw.clock.now(),
            names_known=gw.catalog.names_known,
            tokenizers=gw.prompt_tokenizers,
        )
    except ShipitError as exc:
        await gw.refuse_request(exc, send)
        return
    await forward(gw, view, body, arrived(gw, view, body), scope, receive, send)


def arrived(gw: Gateway, view: RequestView, body: bytes) -> RouterService:
    """The request told to its deployment's router (the retry budget, the autoscaler's
    arrivals, prefill demand) and offered to a shadow rollout; its router."""
    router = gw.routers[view.deployment]
    router.on_request(view.prompt_tokens_estimate)
    if gw.rollouts is not None:
        gw.rollouts.offer(view, body)  # a shadow rollout may mirror it, off this path
    return router


async def forward(
    gw: Gateway,
    view: RequestView,
    body: bytes,
    router: RouterService,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """The answer, through the proxy, with the client watched; counted however it ends."""
    guard = Guard()
    direct = scope.get("extensions", {}).get(DIRECT_BODY)
    watch = ClientWatch(receive, direct, lambda: guard.active)
    status, policy = 499, "-"
    try:
        outcome = await gw.proxy.forward(view, body, router, send, guard, direct)
        status, policy = outcome.status, outcome.policy
    except asyncio.CancelledError:
        if not watch.left:
            raise  # cancelled by the server, not by the client
    finally:
        guard.active = False
        watch.stop()
        gw.metrics.request_done(view.deployment, status, policy)
