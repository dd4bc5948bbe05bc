"""The inference endpoints (``/v1/chat/completions``, ``/v1/completions``): the handler, and its
early start from the server's protocol.

``handle`` is what the route table calls, after the edge: the body, a request id, the request's
view (``gateway.parse``), the arrival told to the router and offered to a shadow rollout
(``arrived``), then the answer through the proxy with a watch on the client (``forward``).

``start`` is the same request begun by the server's protocol in the callback where the
request's last byte was parsed (``gateway.protocol``), before it has an ASGI cycle or a task: the
edge's checks (``Security.prepare_whole``), the view, the arrival, and the first placement with
its upstream request written when a slot is free at once (``RequestCore.begin``). It returns the
ASGI app that goes on from there, which the protocol runs as the request's app: ``forward``
with that placement (a request with no slot free at once waits in the queue from there, as any
other). A request that must take the whole way (keys to check, anything the edge or the parser
refuses, a prompt long enough to tokenize off the loop) makes it return None, nothing changed.
The time to the first token then has no task start, no ASGI message and no frame of the edge
or the handler in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from shipit.core.errors import ShipitError
from shipit.core.views import RequestView
from shipit.gateway import routes
from shipit.gateway.direct import DIRECT_BODY
from shipit.gateway.edge import PARSED_BODY
from shipit.gateway.leaving import ClientWatch
from shipit.gateway.parse import off_loop, parse_request, parse_request_async
from shipit.gateway.proxy import Guard, Receive, Scope, Send, read_whole
from shipit.gateway.request_core import Begun
from shipit.services.router import RouterService

if TYPE_CHECKING:
    from collections.abc import Callable

    from shipit.gateway.app import Gateway

    App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def handle(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    body = await read_whole(receive)
    try:
        view = await parse_request_async(body=body, **_view_of(gw, scope))
    except ShipitError as exc:
        await gw.refuse_request(exc, send)
        return
    await forward(gw, view, body, arrived(gw, view, body), scope, receive, send)


def start(gw: Gateway, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> App | None:
    """The request begun from the server's protocol (see the module's text), or None: it takes
    the whole way, nothing changed."""
    if routes.console_path(gw, path):
        return None
    scope: Scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    sent = gw.security.prepare_whole(scope, body)
    if sent is None or off_loop(sent, gw.prompt_tokenizers):
        return None
    try:
        view = parse_request(body=sent, **_view_of(gw, scope))
    except ShipitError:
        return None  # refused by ``handle``, the same way
    router = arrived(gw, view, sent)
    begun = gw.proxy.core.begin(view, sent, router)

    def go_on(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return forward(gw, view, sent, router, scope, receive, send, begun)

    return go_on


def _view_of(gw: Gateway, scope: Scope) -> dict[str, Any]:
    """What parsing a request needs besides its body: a new request id, what the edge learned
    (its headers, its parsed body), the deployments and the catalog's names, now."""
    rid, headers = gw.request_ids(scope)
    return {
        "request_id": rid,
        "client_request_id": headers.get("x-request-id") or None,
        "path": scope["path"],
        "headers": headers,
        "data": scope.get(PARSED_BODY),
        "deployments": gw.deployments,
        "adapters": gw.catalog.lazy_replica_adapters(),
        "now_s": gw.clock.now(),
        "names_known": gw.catalog.names_known,
        "tokenizers": gw.prompt_tokenizers,
    }


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
    begun: Begun | None = None,
) -> None:
    """The answer, through the proxy, with the client watched; counted however it ends."""
    guard = Guard()
    direct = scope.get("extensions", {}).get(DIRECT_BODY)
    watch = ClientWatch(receive, direct, lambda: guard.active)
    status, policy = 499, "-"
    try:
        outcome = await gw.proxy.forward(view, body, router, send, guard, direct, begun)
        status, policy = outcome.status, outcome.policy
    except asyncio.CancelledError:
        if not watch.left:
            raise  # cancelled by the server, not by the client
    finally:
        guard.active = False
        watch.stop()
        gw.metrics.request_done(view.deployment, status, policy)
