"""The gateway's rollout admin routes, under ``/shipit/rollouts``; ``shipit rollout`` calls them.

- ``GET  /shipit/rollouts``: every deployment's rollout (phase, step, split, last reason and
  analysis, recent events);
- ``GET  /shipit/rollouts/history``: finished rollouts;
- ``POST /shipit/rollouts``: start one (JSON: ``version`` and optionally ``deployment``,
  ``model``, ``simulate``, ``replica_args``, ``replicas``, ``strategy``, ``steps_percent``,
  ``bake_s``, ``keep_old_s``, ``auto_promote``, ``shadow_percent``);
- ``POST /shipit/rollouts/{deployment}/promote`` and ``.../abort``.

Thin: parse, call ``services.rollouts.RolloutController``, answer JSON; a refused request is a
4xx that says what was wrong.
"""

from __future__ import annotations

import json
from typing import Any

from shipit.core import openai_errors as oe
from shipit.gateway.errors import error_json
from shipit.gateway.proxy import Send, send_json
from shipit.policy.rollout import Command
from shipit.services.rollouts import RolloutController, RolloutError

PREFIX = "/shipit/rollouts"


def _ok(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def handle(
    controller: RolloutController | None, method: str, path: str, body: bytes, send: Send
) -> None:
    if controller is None:
        msg = "rollouts need replicas that shipit starts (shipit up without --replica-url only)"
        await send_json(send, 409, error_json(oe.CONFLICT, msg))
        return
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    try:
        if method == "GET" and not parts:
            await send_json(send, 200, _ok({"rollouts": controller.status()}))
        elif method == "GET" and parts == ["history"]:
            await send_json(send, 200, _ok({"rollouts": controller.history()}))
        elif method == "POST" and not parts:
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = None
            if not isinstance(request, dict):
                raise RolloutError('the body must be a JSON object, e.g. {"version": "v2"}')
            await send_json(send, 201, _ok(await controller.start(request)))
        elif method == "POST" and len(parts) == 2 and parts[1] in ("promote", "abort"):
            described = controller.command(parts[0], Command(parts[1]))
            await send_json(send, 202, _ok(described))
        else:
            msg = f"{method} {path} is not a rollout route; see GET {PREFIX}"
            await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg))
    except RolloutError as exc:
        await send_json(send, 400, error_json(oe.INVALID_VALUE, exc.message, exc.field))
