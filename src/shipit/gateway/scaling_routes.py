"""The gateway's runtime scaling bounds, under ``/shipit/scaling``; a fleet's control plane
(``shipit up --fleet``) calls them after each placement.

- ``GET  /shipit/scaling``: each autoscaled deployment's bounds and who set them;
- ``POST /shipit/scaling/{deployment}``: JSON ``{"min_replicas": N, "max_replicas": M,
  "reason": "..."}``: the deployment's autoscaler works inside these bounds from now on.

Behind the gateway's security layer like every ``/shipit/`` route (an admin key when keys are
on). Thin: parse, call ``services.autoscaler.Autoscaler.set_bounds``, answer JSON; a refused
request is a 4xx that says what was wrong and what to send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shipit.core import openai_errors as oe
from shipit.gateway.errors import error_json
from shipit.gateway.proxy import Send, send_json
from shipit.services.autoscaler import Autoscaler

PREFIX = "/shipit/scaling"


def _bounds(a: Autoscaler) -> dict[str, Any]:
    c = a.config
    return {
        "min_replicas": c.min_replicas,
        "max_replicas": c.max_replicas,
        "reason": a.bounds_reason or None,
    }


def _int(request: Mapping[str, Any], name: str) -> int:
    value = request.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of replicas, got {value!r}")
    return value


async def handle(
    autoscalers: Mapping[str, Autoscaler], method: str, path: str, body: bytes, send: Send
) -> None:
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    if method == "GET" and not parts:
        answer = {name: _bounds(a) for name, a in autoscalers.items()}
        await send_json(send, 200, json.dumps({"deployments": answer}).encode())
        return
    if method != "POST" or len(parts) != 1:
        msg = f"{method} {path} is not a scaling route; GET {PREFIX}, POST {PREFIX}/<deployment>"
        await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg))
        return
    name = parts[0]
    autoscaler = autoscalers.get(name)
    if autoscaler is None:
        known = ", ".join(autoscalers) or "none"
        msg = f"no autoscaled deployment {name!r} here (autoscaled: {known})"
        await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg, "deployment"))
        return
    try:
        request = json.loads(body or b"{}")
        if not isinstance(request, dict):
            raise ValueError('the body must be a JSON object, e.g. {"min_replicas": 1, ...}')
        low, high = _int(request, "min_replicas"), _int(request, "max_replicas")
        reason = str(request.get("reason") or "set through POST " + path)
        autoscaler.set_bounds(low, high, reason)
    except ValidationError as exc:
        why = "; ".join(str(e["msg"]) for e in exc.errors())
        await send_json(send, 400, error_json(oe.INVALID_VALUE, f"bounds refused: {why}"))
        return
    except ValueError as exc:
        await send_json(send, 400, error_json(oe.INVALID_VALUE, str(exc)))
        return
    await send_json(send, 200, json.dumps({name: _bounds(autoscaler)}).encode())
