"""The gateway's route table and its small answers: which path takes which method, and the
GET endpoints that are not proxied.

Owns the table of served paths (POST: ``/v1/chat/completions``, ``/v1/completions``,
``/tokenize``, ``/detokenize``; GET and HEAD: ``/v1/models``, ``/v1/models/{id}``, ``/health``,
``/metrics``, ``/shipit/status``, ``/shipit/ready``, ``/openapi.json``; the web console under
``/ui`` when it is on), 404 for any other path and 405 with ``Allow`` for a served path asked
with another method (as a replica answers), and the GET handlers: the model list and cards
(``gateway.catalog``), readiness (200 once a replica of the model is ready, waiting up to
``wait_s``; else 503 with ``Retry-After``), health, metrics, status and the OpenAPI document
(``gateway.openapi``). Inference and tokenizer requests are handed back to the ``Gateway``.
Raw ASGI.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

from shipit.console import serves
from shipit.core import openai_errors as oe
from shipit.gateway.errors import error_json
from shipit.gateway.history import window_param
from shipit.gateway.metrics import CONTENT_TYPE
from shipit.gateway.proxy import Message, Receive, Scope, Send, send_json
from shipit.gateway.tokens import TOKEN_PATHS
from shipit.gateway.validate import INFERENCE_PATHS

if TYPE_CHECKING:
    from shipit.gateway.app import Gateway

POST_PATHS = INFERENCE_PATHS | TOKEN_PATHS
GET_PATHS = frozenset(
    {"/v1/models", "/health", "/metrics", "/shipit/status", "/shipit/ready", "/openapi.json"}
)
MODEL_PREFIX = "/v1/models/"
READY_RETRY_AFTER_S = 1


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods ``path`` takes, or ``None`` when the gateway does not serve it."""
    if path in POST_PATHS:
        return ("POST",)
    if path in GET_PATHS or (path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX)):
        return ("GET", "HEAD")
    return None


def _headless(send: Send) -> Send:
    """A HEAD answer: the GET's status and headers, no body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


def dispatch(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """The handler of the request, to await. An inference request gets its handler's own
    coroutine (no frame of this function stays between the server and it while it waits)."""
    path = scope["path"]
    if path in INFERENCE_PATHS and scope["method"] == "POST" and not console_path(gw, path):
        return gw.handle_inference(scope, receive, send)
    return _dispatch(gw, scope, receive, send)


def console_path(gw: Gateway, path: str) -> bool:
    """The web console serves ``path`` (when it is on)."""
    return gw.console is not None and serves(path)


async def _dispatch(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    if gw.console is not None and serves(path):  # the web console, when on (shipit.console)
        await gw.console(scope, receive, send)
        return
    methods = allowed_methods(path)
    if methods is None:
        msg = f"{method} {path}: no such endpoint; the gateway serves /v1/chat/completions, "
        msg += "/v1/completions, /v1/models, /tokenize, /detokenize, /health and /shipit/ready"
        await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg))
        return
    if method not in methods:
        allow = ", ".join(methods)
        msg = f"{method} is not allowed on {path}; use {allow}"
        await send_json(
            send, 405, error_json(oe.METHOD_NOT_ALLOWED, msg), [(b"allow", allow.encode())]
        )
        return
    if path in INFERENCE_PATHS:
        await gw.handle_inference(scope, receive, send)
    elif path in TOKEN_PATHS:
        await gw.handle_tokens(scope, receive, send)
    else:
        query: bytes = scope.get("query_string", b"")
        await answer_get(gw, path, query, send if method == "GET" else _headless(send))


async def answer_get(gw: Gateway, path: str, query: bytes, send: Send) -> None:
    if path == "/metrics":
        body = gw.metrics.render()
        headers = [(b"content-type", CONTENT_TYPE.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/health":
        ready = sum(r.ready_count() for r in gw.routers.values())
        await send_json(send, 200 if ready else 503, json.dumps({"ready_replicas": ready}).encode())
    elif path == "/v1/models":
        await send_json(send, 200, json.dumps(gw.catalog.models()).encode())
    elif path.startswith(MODEL_PREFIX):
        await _model(gw, unquote(path[len(MODEL_PREFIX) :]), send)
    elif path == "/shipit/status":
        await send_json(send, 200, json.dumps(gw.status(window_param(query))).encode())
    elif path == "/shipit/ready":
        await _ready(gw, parse_qs(query.decode("latin-1")), send)
    elif path == "/openapi.json":
        await send_json(send, 200, gw.openapi)


async def _model(gw: Gateway, model_id: str, send: Send) -> None:
    card = gw.catalog.find(model_id)
    if card is not None:
        await send_json(send, 200, json.dumps(card).encode())
        return
    catalog = gw.catalog
    name = catalog.deployment_of(model_id)
    if name is not None:  # configured, but no replica of it can serve yet
        msg = (
            f"The model `{model_id}` is not ready yet ({catalog.describe(name)}); "
            f"GET /shipit/ready?model={model_id}&wait_s=60 waits for it"
        )
        retry = [(b"retry-after", str(READY_RETRY_AFTER_S).encode())]
        await send_json(send, 503, error_json(oe.UNAVAILABLE, msg, "model"), retry)
        return
    msg = (
        f"The model `{model_id}` does not exist; this gateway serves {', '.join(catalog.served())}"
    )
    await send_json(send, 404, error_json(oe.MODEL_NOT_FOUND, msg, "model"))


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


async def _ready(gw: Gateway, query: dict[str, list[str]], send: Send) -> None:
    """``GET /shipit/ready[?model=NAME][&wait_s=N]``: 200 once every deployment (or the one
    serving NAME) has a ready replica, waiting up to N seconds (default 0); else 503. It needs
    no key; with keys on it answers readiness only (no replica counts, no model list)."""
    catalog = gw.catalog
    terse = gw.security.keys is not None  # anyone may ask: say only ready or not
    raw_wait = _one(query, "wait_s") or "0"
    try:
        wait_s = float(raw_wait)
        if not 0 <= wait_s <= 600:
            raise ValueError
    except ValueError:
        msg = f"wait_s must be a number of seconds from 0 to 600, got {raw_wait!r}"
        await send_json(send, 400, error_json(oe.INVALID_VALUE, msg, "wait_s"))
        return
    model = _one(query, "model")
    if model is None:
        names = list(gw.routers)
    else:
        found = catalog.deployment_of(model)
        if found is None:
            msg = f"The model `{model}` does not exist"
            msg += "" if terse else "; this gateway serves " + ", ".join(catalog.served())
            await send_json(send, 404, error_json(oe.MODEL_NOT_FOUND, msg, "model"))
            return
        names = [found]
    if await catalog.wait_ready(names, wait_s):
        ready = {gw.deployments[n].model_name: gw.routers[n].ready_count() for n in names}
        answer = {"ready": True} if terse else {"ready": True, "ready_replicas": ready}
        await send_json(send, 200, json.dumps(answer).encode())
        return
    waiting = "; ".join(catalog.describe(n) for n in names if gw.routers[n].ready_count() == 0)
    msg = f"not ready after {wait_s:g} s" + ("" if terse else f": {waiting}")
    retry = [(b"retry-after", str(READY_RETRY_AFTER_S).encode())]
    await send_json(send, 503, error_json(oe.UNAVAILABLE, msg), retry)
