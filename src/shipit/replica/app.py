"""The replica's ASGI app: OpenAI-compatible endpoints over one ``AsyncEngine``.

``create_app`` builds a Starlette app whose lifespan owns the engine (loaded in a worker
thread, so ``/health`` answers 503 while loading), the KV-event poller and the metrics
registry. Handlers are thin: parse the body once into a ``GenerationRequest`` (engine types)
and hand it to ``replica.generate``, which runs it and writes OpenAI JSON or SSE; every
generation request is tracked by the ``Lifecycle`` so a drain can wait for it. This module
serves the OpenAI routes (completions, chat, ``/v1/models`` and ``/v1/models/{id}``), vLLM's
``/tokenize`` and ``/detokenize``, ``/health``, ``/metrics`` and ``/openapi.json``, with every
error (a wrong path or method included) in OpenAI's shape; the admin routes (LoRA load/unload,
KV events, the startup report) are in ``replica.admin``. No import-time side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError, UnknownAdapterError
from shipit.core.replica_admin import CACHE_SALT_HEADER
from shipit.engine.async_engine import AsyncEngine
from shipit.engine.engine import LLMEngine
from shipit.replica import limits, protocol, requests, tokens
from shipit.replica.admin import admin_routes
from shipit.replica.auth import AdminAuth
from shipit.replica.errors import error_response, from_exception, http_exception, unavailable
from shipit.replica.generate import generate
from shipit.replica.guard import Guard
from shipit.replica.kv_events import KVEventBuffer
from shipit.replica.lifecycle import Lifecycle, Phase
from shipit.replica.metrics import CONTENT_TYPE, ReplicaMetrics
from shipit.replica.openapi import openapi_document
from shipit.replica.requests import GenerationRequest
from shipit.replica.runtime import build_engine
from shipit.replica.settings import ReplicaSettings
from shipit.replica.startup import StartupTimes

log = logging.getLogger("shipit.replica")

EngineFactory = Callable[[ReplicaSettings], LLMEngine]


class Replica:
    """State shared by the handlers of one app; built by ``create_app``."""

    def __init__(
        self,
        settings: ReplicaSettings,
        engine_factory: EngineFactory,
        on_fatal: Callable[[], None] | None,
        startup: StartupTimes | None = None,
    ) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.engine_factory = engine_factory
        self.on_fatal = on_fatal
        self.lifecycle = Lifecycle()
        self.metrics = ReplicaMetrics(self.model_name, max_loras=settings.max_loras)
        self.kv_events = KVEventBuffer(settings.kv_event_buffer)
        self.instance_id = uuid.uuid4().hex
        self.created = int(time.time())
        self.engine: AsyncEngine | None = None
        self.startup = startup if startup is not None else StartupTimes()
        self.auth = AdminAuth(settings)

    # ----- lifespan -----------------------------------------------------------------------
    async def load(self) -> None:
        self.startup.loading()
        try:
            engine = await asyncio.to_thread(self.engine_factory, self.settings)
        except Exception as exc:  # a replica that cannot load must say why and stop
            log.exception("loading %s failed", self.settings.model)
            self.lifecycle.fail(f"loading {self.settings.model} failed: {exc}")
            if self.on_fatal is not None:
                self.on_fatal()
            return
        self.engine = AsyncEngine(engine)
        self.engine.start()
        await self.engine.call(lambda e: e.stats())  # warm-up ends when the engine answers
        self.startup.ready()
        self.lifecycle.ready()
        log.info("replica ready: %s (max_model_len %d)", self.model_name, engine.max_model_len)
        # Only chat needs the template (and jinja2): compiled now, after ready, so neither
        # the start nor the first chat request waits for it.
        try:
            await asyncio.to_thread(engine.tokenizer.compile_chat_template)
        except Exception:  # a broken template fails the chat requests, not the replica
            log.warning("the chat template of %s does not compile", self.model_name, exc_info=True)

    async def poll_kv_events(self) -> None:
        while True:
            await asyncio.sleep(self.settings.kv_event_poll_s)
            await self.pull_kv_events()

    async def pull_kv_events(self) -> None:
        if self.engine is not None:
            events = await self.engine.call(lambda e: e.drain_kv_events())
            self.kv_events.extend(events)

    async def close(self) -> None:
        if self.engine is not None:
            await asyncio.to_thread(self.engine.stop)

    async def drain(self) -> int:
        return await self.lifecycle.drain(self.settings.drain_timeout_s)

    # ----- helpers ------------------------------------------------------------------------
    def not_serving(self) -> Response | None:
        phase = self.lifecycle.phase
        if phase is Phase.READY and self.engine is not None:
            return None
        why = {
            Phase.LOADING: f"the replica is loading {self.settings.model}",
            Phase.DRAINING: "the replica is draining and takes no new requests",
            Phase.STOPPED: "the replica is shutting down",
            Phase.FAILED: f"the replica failed: {self.lifecycle.error}",
        }.get(phase, "the replica is not ready")
        return unavailable(why + "; retry on another replica", self.settings.retry_after_s)

    def _lora_for(self, model: str) -> str | None:
        if model == self.model_name:
            return None
        assert self.engine is not None
        if model in self.engine.engine.loras:
            return model
        raise UnknownAdapterError(
            f"The model `{model}` does not exist; this replica serves {self.model_name!r} "
            f"and the LoRA adapters listed by GET /v1/models",
            field="model",
        )

    # ----- generation ---------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, kind: Literal["completion", "chat"]) -> Response:
        refused = self.not_serving()
        if refused is not None:
            return refused
        assert self.engine is not None
        engine = self.engine
        salt = request.headers.get(CACHE_SALT_HEADER)
        if salt is not None:
            refused = self.auth.refusal(request.headers, f"the {CACHE_SALT_HEADER} header")
            if refused is not None:
                return refused
        try:
            req = self._parse(await request.body(), kind, engine)
            lora_name = self._lora_for(req.model)
        except ShipitError as exc:
            return from_exception(exc)
        if salt is not None:  # the gateway's tenant salt wins over a body's cache_salt
            req = dataclasses.replace(req, cache_salt=salt)
        return await generate(self, request, req, lora_name)

    def _parse(
        self, raw: bytes, kind: Literal["completion", "chat"], engine: AsyncEngine
    ) -> GenerationRequest:
        tokenizer, max_len = engine.engine.tokenizer, engine.engine.max_model_len
        if kind == "completion":
            body = protocol.parse_body(raw, protocol.CompletionBody)
            limits.check_prompt(body.prompt, max_prompt_chars=self.settings.max_prompt_chars)
            return requests.completion_request(body, tokenizer, max_len)
        chat = protocol.parse_body(raw, protocol.ChatBody)
        self.check_messages(chat.messages)
        return requests.chat_request(chat, tokenizer, max_len)

    def check_messages(self, messages: list[Any]) -> None:
        s = self.settings
        limits.check_messages(
            messages, max_messages=s.max_messages, max_prompt_chars=s.max_prompt_chars
        )

    # ----- models and tokens ----------------------------------------------------------------
    def _card(self, name: str) -> dict[str, Any]:
        parent = None if name == self.model_name else self.model_name
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "shipit",
            "root": name,
            "parent": parent,
            "max_model_len": self.engine.engine.max_model_len if self.engine else None,
        }

    def _model_names(self) -> list[str]:
        names = self.engine.engine.loras.names() if self.engine else []
        return [self.model_name, *names]

    async def models(self, request: Request) -> Response:
        data = [self._card(name) for name in self._model_names()]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in self._model_names():
            return error_response(
                oe.MODEL_NOT_FOUND,
                f"The model `{name}` does not exist; this replica serves "
                f"{', '.join(self._model_names())}",
                param="model",
            )
        return JSONResponse(self._card(name))

    async def tokenize(self, request: Request) -> Response:
        refused = self.not_serving()
        if refused is not None:
            return refused
        assert self.engine is not None
        engine = self.engine.engine
        try:
            body = tokens.parse_tokenize(await request.body())
            if isinstance(body, protocol.TokenizeChatBody):
                self.check_messages(body.messages)
            else:
                limits.check_prompt(body.prompt, max_prompt_chars=self.settings.max_prompt_chars)
            if body.model is not None:
                self._lora_for(body.model)
            result = tokens.tokenize(body, engine.tokenizer, engine.max_model_len)
        except ShipitError as exc:
            return from_exception(exc)
        return JSONResponse(result)

    async def detokenize(self, request: Request) -> Response:
        refused = self.not_serving()
        if refused is not None:
            return refused
        assert self.engine is not None
        engine = self.engine.engine
        try:
            body = protocol.parse_body(await request.body(), protocol.DetokenizeBody)
            if body.model is not None:
                self._lora_for(body.model)
            result = tokens.detokenize(body, engine.tokenizer, engine.model_config.vocab_size)
        except ShipitError as exc:
            return from_exception(exc)
        return JSONResponse(result)

    # ----- everything else ----------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        refused = self.not_serving()
        return refused if refused is not None else Response(status_code=200)

    async def openapi(self, request: Request) -> Response:
        return Response(openapi_document(), media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        stats = None
        if self.engine is not None:
            stats = await self.engine.call(lambda e: e.stats())
        body = self.metrics.render(stats)
        return Response(body, media_type=CONTENT_TYPE)


def create_app(
    settings: ReplicaSettings,
    *,
    engine_factory: EngineFactory | None = None,
    on_fatal: Callable[[], None] | None = None,
    startup: StartupTimes | None = None,
) -> Starlette:
    """A replica app; the engine is built by ``engine_factory`` in the lifespan (default: the
    real runtime, which also marks when the weights are in for ``/shipit/startup``).

    ``on_fatal`` is called (on the event loop) if the engine cannot be built, so a server
    can exit non-zero. ``app.state.replica`` is the ``Replica`` (the server drains it).
    ``startup`` carries marks taken before the app existed (the command's start).
    """
    holder: list[Replica] = []

    def default_factory(s: ReplicaSettings) -> LLMEngine:
        return build_engine(s, on_weights_loaded=holder[0].startup.weights_loaded)

    replica = Replica(settings, engine_factory or default_factory, on_fatal, startup)
    holder.append(replica)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = asyncio.create_task(replica.load())
        poller = asyncio.create_task(replica.poll_kv_events())
        try:
            yield
        finally:
            poller.cancel()
            loader.cancel()
            await asyncio.gather(loader, poller, return_exceptions=True)
            await replica.close()

    routes = [
        Route("/v1/completions", replica.completions, methods=["POST"]),
        Route("/v1/chat/completions", replica.chat_completions, methods=["POST"]),
        Route("/v1/models", replica.models, methods=["GET"]),
        Route("/v1/models/{model:path}", replica.model, methods=["GET"]),
        Route("/tokenize", replica.tokenize, methods=["POST"]),
        Route("/detokenize", replica.detokenize, methods=["POST"]),
        Route("/health", replica.health, methods=["GET"]),
        Route("/metrics", replica.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", replica.openapi, methods=["GET"]),
        *admin_routes(replica),
    ]
    guard = Middleware(
        Guard, max_body_bytes=settings.max_body_bytes, on_error=replica.metrics.error
    )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[guard],
        exception_handlers={HTTPException: http_exception},
    )
    app.state.replica = replica
    return app
