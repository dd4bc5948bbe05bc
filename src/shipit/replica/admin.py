"""The replica's admin routes: LoRA adapter load/unload, KV-cache events, the startup report.

These are the endpoints the gateway and operators call, not clients: vLLM's
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (same bodies and replies),
``/v1/kv_events`` (the engine's block stored/removed events, paged, for prefix-aware routing)
and ``/shipit/startup`` (the cold start in phases). ``admin_routes`` builds them over one
``Replica`` (``replica.app``), whose engine, lifecycle and buffers they read; handlers are
thin and must not hold state of their own.

Every admin route needs the replica's admin token (``replica.auth``): the gateway sends it;
clients never have it. Loading adapters at run time is off unless ``--enable-lora-loading``,
and then only from under ``--lora-root`` directories (``replica.lora_roots``); a loaded
adapter's name cannot be pointed at another path until it is unloaded (409).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError
from shipit.replica import protocol
from shipit.replica.auth import AdminAuth
from shipit.replica.errors import error_response, from_exception
from shipit.replica.lora_roots import resolve_adapter_path, resolve_roots

if TYPE_CHECKING:
    from shipit.engine.engine import LLMEngine
    from shipit.replica.app import Replica

log = logging.getLogger("shipit.replica")

Handler = Callable[[Request], Awaitable[Response]]

MAX_KV_EVENTS_PAGE = 10_000
ADAPTER_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")  # it becomes a model name and a log field


def admin_routes(replica: Replica) -> list[Route]:
    """The admin routes of one replica app."""
    admin = ReplicaAdmin(replica)
    auth = replica.auth
    return [
        Route("/shipit/startup", _guarded(auth, admin.startup), methods=["GET"]),
        Route("/v1/load_lora_adapter", _guarded(auth, admin.load_lora), methods=["POST"]),
        Route("/v1/unload_lora_adapter", _guarded(auth, admin.unload_lora), methods=["POST"]),
        Route("/v1/kv_events", _guarded(auth, admin.kv_events), methods=["GET"]),
    ]


def _guarded(auth: AdminAuth, handler: Handler) -> Handler:
    """``handler`` behind the admin token (checked before the body is parsed)."""

    async def guarded(request: Request) -> Response:
        refused = auth.refusal(request.headers, f"{request.method} {request.url.path}")
        return refused if refused is not None else await handler(request)

    return guarded


class ReplicaAdmin:
    """Handlers of the admin routes over one ``Replica``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.lora_roots = resolve_roots(replica.settings.lora_roots)

    async def startup(self, request: Request) -> Response:
        """The cold start in phases (``shipit.replica.startup``); answers while loading too."""
        r = self.replica
        return JSONResponse({"phase": r.lifecycle.phase.value, **r.startup.to_json()})

    async def load_lora(self, request: Request) -> Response:
        r = self.replica
        if not r.settings.enable_lora_loading:
            return error_response(
                oe.PERMISSION_DENIED,
                "loading LoRA adapters at run time is disabled on this replica; start it with "
                "--enable-lora-loading --lora-root DIR, or load adapters at start with --lora",
            )
        refused = r.not_serving()
        if refused is not None:
            return refused
        assert r.engine is not None
        engine = r.engine
        try:
            body = protocol.parse_body(await request.body(), protocol.LoadLoraBody)
            if not ADAPTER_NAME.fullmatch(body.lora_name):
                return error_response(
                    oe.INVALID_VALUE,
                    f"lora_name {body.lora_name[:140]!r} is not a usable model name; use 1 to "
                    "128 printable characters (it is what clients send as `model`)",
                    param="lora_name",
                )
            if body.lora_name == r.model_name:
                return error_response(
                    oe.INVALID_VALUE,
                    f"lora_name {body.lora_name!r} is the base model's name; pick another",
                    param="lora_name",
                )
            path = resolve_adapter_path(body.lora_path, self.lora_roots)
            loaded = await engine.call(lambda e: _loaded_path(e, body.lora_name))
            if loaded is not None and loaded != path:
                return error_response(
                    oe.CONFLICT,
                    f"LoRA adapter {body.lora_name!r} is already loaded from another path; "
                    "unload it first (POST /v1/unload_lora_adapter) or pick another lora_name",
                    param="lora_name",
                )
            await engine.call(lambda e: e.load_lora(body.lora_name, path))
        except ShipitError as exc:
            return from_exception(exc)
        log.info("loaded LoRA adapter %s from %s", body.lora_name, path)
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


def _loaded_path(engine: LLMEngine, name: str) -> str | None:
    """The resolved path adapter ``name`` was loaded from, if it is loaded (engine thread)."""
    return engine.loras.get(name).path if name in engine.loras else None
