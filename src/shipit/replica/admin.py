"""The replica's admin routes: LoRA adapter load/unload, KV-cache events, the startup report.

These are the endpoints the gateway and operators call, not clients: vLLM's
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (same bodies and replies),
``/v1/kv_events`` (the engine's block stored/removed events, paged, for prefix-aware routing)
and ``/shipit/startup`` (the cold start in phases). ``admin_routes`` builds them over one
``Replica`` (``replica.app``), whose engine, lifecycle and buffers they read; handlers are
thin and must not hold state of their own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError
from shipit.replica import protocol
from shipit.replica.errors import error_response, from_exception

if TYPE_CHECKING:
    from shipit.replica.app import Replica

log = logging.getLogger("shipit.replica")

MAX_KV_EVENTS_PAGE = 10_000


def admin_routes(replica: Replica) -> list[Route]:
    """The admin routes of one replica app."""
    admin = ReplicaAdmin(replica)
    return [
        Route("/shipit/startup", admin.startup, methods=["GET"]),
        Route("/v1/load_lora_adapter", admin.load_lora, methods=["POST"]),
        Route("/v1/unload_lora_adapter", admin.unload_lora, methods=["POST"]),
        Route("/v1/kv_events", admin.kv_events, methods=["GET"]),
    ]


class ReplicaAdmin:
    """Handlers of the admin routes over one ``Replica``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def startup(self, request: Request) -> Response:
        """The cold start in phases (``shipit.replica.startup``); answers while loading too."""
        r = self.replica
        return JSONResponse({"phase": r.lifecycle.phase.value, **r.startup.to_json()})

    async def load_lora(self, request: Request) -> Response:
        r = self.replica
        refused = r.not_serving()
        if refused is not None:
            return refused
        assert r.engine is not None
        engine = r.engine
        try:
            body = protocol.parse_body(await request.body(), protocol.LoadLoraBody)
            if body.lora_name == r.model_name:
                return error_response(
                    oe.INVALID_VALUE,
                    f"lora_name {body.lora_name!r} is the base model's name; pick another",
                    param="lora_name",
                )
            await engine.call(lambda e: e.load_lora(body.lora_name, body.lora_path))
        except ShipitError as exc:
            return from_exception(exc)
        log.info("loaded LoRA adapter %s from %s", body.lora_name, body.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    async def unload_lora(self, request: Request) -> Response:
        r = self.replica
        refused = r.not_serving()
        if refused is not None:
            return refused
        assert r.engine is not None
        engine = r.engine
        try:
            body = protocol.parse_body(await request.body(), protocol.UnloadLoraBody)
            await engine.call(lambda e: e.unload_lora(body.lora_name))
        except ShipitError as exc:
            return from_exception(exc)
        log.info("unloaded LoRA adapter %s", body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    async def kv_events(self, request: Request) -> Response:
        r = self.replica
        try:
            after = int(request.query_params.get("after", "-1"))
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError:
            return error_response(
                oe.INVALID_TYPE, "after and limit must be integers", param="after"
            )
        if not 1 <= limit <= MAX_KV_EVENTS_PAGE or after < -1:
            return error_response(
                oe.INVALID_VALUE,
                f"limit must be in 1..{MAX_KV_EVENTS_PAGE} and after >= -1",
                param="limit",
            )
        await r.pull_kv_events()
        page = r.kv_events.events_after(after, limit=limit)
        block_size = r.engine.engine.config.block_size if r.engine else 0
        return JSONResponse(page.to_json(block_size=block_size, instance_id=r.instance_id))
