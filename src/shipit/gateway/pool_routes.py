"""A live fleet plane's capacity pools, under ``/shipit/pools``:

- ``GET  /shipit/pools``: the plane's pools, replicas by pool, whether spot is short, the
  pool choices and the pre-emption notices with their reasons;
- ``POST /shipit/pools/preempt``: JSON ``{"replica_id": "..."}``: a spot pre-emption notice
  for that replica now (drills and tests; the plane also draws them at the pool's rate);
- ``POST /shipit/pools/fail``: JSON ``{"replica_id": "..."}``: that replica's GPU fails now
  (killed, its node cordoned, stopped and replaced; the plane also draws failures at the
  fleet's ``gpu_failures_per_hour``).

Behind the gateway's security layer like every ``/shipit/`` route. Thin: parse, call
``services.spot_pools.PlanePools``, answer JSON; a refused request is a 4xx saying why.
"""

from __future__ import annotations

import json

from shipit.core import openai_errors as oe
from shipit.gateway.errors import error_json
from shipit.gateway.proxy import Send, send_json
from shipit.services.spot_pools import PlanePools, PoolError

PREFIX = "/shipit/pools"


async def handle(pools: PlanePools | None, method: str, path: str, body: bytes, send: Send) -> None:
    if pools is None:
        msg = "this gateway has no pools: they are a plane's of a live fleet (shipit up --fleet)"
        await send_json(send, 409, error_json(oe.CONFLICT, msg))
        return
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    if method == "GET" and not parts:
        await send_json(send, 200, json.dumps(pools.status()).encode())
        return
    if method != "POST" or parts not in (["preempt"], ["fail"]):
        msg = (
            f"{method} {path} is not a pools route; GET {PREFIX}, POST {PREFIX}/preempt, "
            f"POST {PREFIX}/fail"
        )
        await send_json(send, 404, error_json(oe.PATH_NOT_FOUND, msg))
        return
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = None
    replica = request.get("replica_id") if isinstance(request, dict) else None
    if not isinstance(replica, str) or not replica:
        msg = 'the body must be a JSON object naming the replica: {"replica_id": "..."}'
        await send_json(send, 400, error_json(oe.INVALID_VALUE, msg, "replica_id"))
        return
    try:
        if parts == ["fail"]:
            event = await pools.gpus.fail(replica)
        else:
            event = await pools.preempt(replica)
    except PoolError as exc:
        await send_json(send, 409, error_json(oe.CONFLICT, exc.message, "replica_id"))
        return
    await send_json(send, 202, json.dumps(event).encode())
