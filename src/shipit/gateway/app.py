"""The gateway's ASGI app: OpenAI endpoints proxied on a raw ASGI path, plus a few admin routes.

``create_gateway`` builds the app from the config and one ``RouterService`` per deployment.
The lifespan owns the upstream client, the replica monitors, the autoscalers (one per
deployment of local replicas, given a ``ReplicaPool``), the baseline-alert loop
(``gateway.observability``; its active alerts are ``/shipit/status``'s ``alerts``) and the
caller's start/stop hooks (``cli.up`` starts and stops replica processes there).
``gateway.routes`` holds the route table (404 and 405 in OpenAI's shape) and the GET answers
(models, readiness, health, metrics, status); ``POST /v1/chat/completions`` and
``/v1/completions`` go to ``proxy``, ``/tokenize`` and ``/detokenize`` to ``tokens``. No
framework, no globals: everything hangs off the ``Gateway`` instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from shipit.config.gateway import ShipitConfig
from shipit.config.upstream_auth import resolve_upstream_auth
from shipit.core.clock import Clock, RealClock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.errors import ShipitError
from shipit.core.replica_admin import bearer
from shipit.gateway import inference, pool_routes, rollout_routes, routes, scaling_routes
from shipit.gateway.auth import Security, open_stores, usage_store
from shipit.gateway.catalog import Catalog
from shipit.gateway.console_fleet import console_app
from shipit.gateway.edge import HEADERS
from shipit.gateway.errors import error_json, kind_of
from shipit.gateway.history import CounterHistory, registry_reader
from shipit.gateway.jobs_service import JobsService
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.observability import build_alert_service
from shipit.gateway.openapi import openapi_document
from shipit.gateway.parse import parse_token_request
from shipit.gateway.prompt_tokens import load_prompt_tokenizers
from shipit.gateway.proxy import Proxy, Receive, Scope, Send, read_whole, send_json
from shipit.gateway.routes_jobs import PREFIXES as JOB_PREFIXES
from shipit.gateway.routes_jobs import JobsApi
from shipit.gateway.status import fleet_status
from shipit.gateway.tokens import forward_tokens
from shipit.gateway.validate import INFERENCE_PATHS
from shipit.gateway.ws import WebSocketDoor
from shipit.services.audit import NO_AUDIT, AuditLog
from shipit.services.autoscaler import Autoscaler, ReplicaPool, effective_config
from shipit.services.keystore import KeyStore
from shipit.services.monitor import AdapterLoader, ReplicaMonitor
from shipit.services.rollouts import RolloutController, VersionPool
from shipit.services.router import RouterService
from shipit.services.spot_pools import PlanePools
from shipit.services.upstream import AiohttpUpstream, Upstream
from shipit.telemetry.instruments import build_control_plane_metrics, build_rollout_metrics

log = logging.getLogger("shipit.gateway")
Hook = Callable[[], Awaitable[None]]


# Paths served before the route table: rollouts, scaling bounds, pools, the job API.
_CONTROL_PREFIXES = (
    rollout_routes.PREFIX,
    scaling_routes.PREFIX,
    pool_routes.PREFIX,
    *JOB_PREFIXES,
)


class Gateway:
    def __init__(
        self,
        config: ShipitConfig,
        routers: Mapping[str, RouterService],
        *,
        clock: Clock,
        upstream_factory: Callable[[], Upstream],
        on_startup: list[Hook],
        on_shutdown: list[Hook],
        monitor: bool,
        pool: ReplicaPool | None = None,
        decisions: DecisionLog = NO_LOG,
        versions: VersionPool | None = None,
        rollout_home: Path | None = None,
        keys: KeyStore | None = None,
        audit: AuditLog = NO_AUDIT,
        request_schemas: Mapping[str, Any] | None = None,
        console: bool = False,
    ) -> None:
        self.config = config
        self.openapi = openapi_document(  # served at /openapi.json
            request_schemas,
            priority_range=config.gateway.auth.priority_range,
            max_deadline_ms=config.gateway.limits.max_deadline_ms,
        )
        self.decisions = decisions
        self.routers = dict(routers)
        self.deployments = {d.name: d for d in config.deployments}
        # Token-exact prefix hashing: each deployment's tokenizer, read once, here.
        self.prompt_tokenizers = load_prompt_tokenizers(config.deployments)
        self.catalog = Catalog(self.deployments, self.routers)
        self.clock = clock
        self.started_at_s = time.time()  # Unix time, for /shipit/status
        self.started_clock_s = clock.now()
        self.metrics = GatewayMetrics(self.routers)
        self._upstream_factory = upstream_factory
        self._on_startup, self._on_shutdown = on_startup, on_shutdown
        self._monitor = monitor
        self.upstream: Upstream | None = None
        self.adapters: AdapterLoader | None = None
        self.monitors = {}  # type: dict[str, ReplicaMonitor]
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count()
        self._id_prefix = f"gw-{os.getpid():x}-"
        self.autoscalers: dict[str, Autoscaler] = {}
        self.alerts = build_alert_service(config, self.metrics, self.routers, self._get_upstream)
        self.history = CounterHistory(registry_reader(self.metrics.registry), clock.now)
        # Autoscaling, cold starts and node cordons (a replica backend's, bound by `shipit up`).
        self.control_metrics = build_control_plane_metrics(self.metrics.registry)
        # A plane of a live fleet: its pools choose each replica's, and spot is pre-empted.
        self.pools: PlanePools | None = None
        if pool is not None and config.plane is not None:
            self.pools = PlanePools(
                config.plane, self.routers, pool, clock=clock, registry=self.metrics.registry,
                metrics=self.control_metrics, log_decisions=decisions,
            )  # fmt: skip
            pool = self.pools
        if pool is not None:
            self._build_autoscalers(pool)
        # Read once, here: a missing variable or file stops the start.
        self.upstream_auth = {
            d.name: resolve_upstream_auth(d.upstream_auth, deployment=d.name)
            for d in config.deployments
        }
        self.rollouts: RolloutController | None = None
        if versions is not None:
            self.rollouts = RolloutController(
                self.routers,
                versions,
                upstream=self._get_upstream,
                clock=clock,
                home=rollout_home,
                decisions=decisions,
                metrics=build_rollout_metrics(self.metrics.registry),
            )
        self.proxy = Proxy(
            metrics=self.metrics,
            upstream=self._get_upstream,
            adapters=self._get_adapters,
            now=clock.now,
            upstream_headers=self.upstream_auth,
        )
        self.jobs = JobsService(config, self.routers, self.proxy.core, self.metrics, clock)
        self.jobs.tokenizers = self.prompt_tokenizers
        self.jobs_api = JobsApi(self.jobs)
        if len(self.autoscalers) == 1 == len(self.routers) and config.jobs.scale_for_jobs:
            # Queued job lines are demand (one deployment: they can only be for it).
            next(iter(self.autoscalers.values())).extra_demand = self.jobs.queued_work
        # Keys, tenants, rate limits and edge limits run before any handler (gateway.auth).
        self.security = Security(
            self._serve_http,
            config,
            keys=keys,
            now=clock.now,
            audit=audit,
            on_refused=lambda status: self.metrics.request_done("-", status, "-"),
            usage=usage_store(keys),
        )
        self.jobs.security = self.security  # job lines are charged to their tenants
        self.console = console_app(self) if console else None  # /ui (gateway.routes)
        self.websocket = WebSocketDoor(
            core=self.proxy.core,
            routers=self.routers,
            deployments=self.deployments,
            tokenizers=self.prompt_tokenizers,
            metrics=self.metrics,
            clock=clock,
            catalog=self.catalog,
            new_id=self.new_request_id,
            security=self.security,
        )

    def _build_autoscalers(self, pool: ReplicaPool) -> None:
        metrics = self.control_metrics
        for name, router in self.routers.items():
            config = effective_config(router.deployment)
            if config is not None:
                self.autoscalers[name] = Autoscaler(
                    router,
                    pool,
                    config,
                    clock=self.clock,
                    metrics=metrics,
                    probe=self._startup_report,
                    log=self.decisions,
                )

    async def _startup_report(self, url: str) -> dict[str, Any] | None:
        """A replica's ``/shipit/startup`` (its cold-start phases); ``None`` if it has none."""
        status, body = await self._get_upstream().get(url + "/shipit/startup", timeout_s=2.0)
        report = json.loads(body) if status == 200 else None
        return report if isinstance(report, dict) else None

    def _get_upstream(self) -> Upstream:
        if self.upstream is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self.upstream

    def _get_adapters(self) -> AdapterLoader:
        if self.adapters is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self.adapters

    # ----- lifespan -------------------------------------------------------------------------
    async def startup(self) -> None:
        self.upstream = self._upstream_factory()
        paths: dict[str, str] = {}
        for d in self.config.deployments:
            paths.update(d.routing.lora_affinity.adapters)
        self.adapters = AdapterLoader(self.upstream, paths)
        for name, router in self.routers.items():
            auth = self.upstream_auth.get(name)
            self.monitors[name] = ReplicaMonitor(
                router, self.upstream, log=self.decisions, headers=auth.headers if auth else None
            )
        if self.rollouts is not None:
            self.rollouts.load()  # before replicas start: a finished rollout set the version
        for hook in self._on_startup:
            await hook()
        await self.jobs.start()
        if self._monitor:
            self._tasks = [asyncio.create_task(m.run()) for m in self.monitors.values()]
            if self.alerts is not None:
                self._tasks.append(asyncio.create_task(self.alerts.run()))
        self._tasks += [asyncio.create_task(a.run()) for a in self.autoscalers.values()]
        if self.pools is not None:
            self._tasks.append(asyncio.create_task(self.pools.run()))
        if self.rollouts is not None:
            self._tasks.append(asyncio.create_task(self.rollouts.run()))
        self._tasks.append(asyncio.create_task(self.history.run()))

    async def shutdown(self) -> None:
        await self.jobs.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []  # a gateway may be started again (on another event loop)
        await asyncio.gather(*(a.close() for a in self.autoscalers.values()))
        if self.pools is not None:
            await self.pools.close()
        if self.rollouts is not None:
            await self.rollouts.close()
        for hook in self._on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("a shutdown hook failed")
        if self.upstream is not None:
            await self.upstream.close()
        self.security.audit.close()
        if self.security.usage is not None:
            self.security.usage.flush()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ----- requests -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ``async def`` on purpose: servers that guess the ASGI version from the app (uvicorn
        # without ``interface``, hypercorn) take a plain ``__call__`` for ASGI 2.
        kind = scope["type"]
        if kind == "http":
            await self.security(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)

    def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """After the security layer: rollouts (``gateway.rollout_routes``), runtime scaling
        bounds (``gateway.scaling_routes``), a fleet plane's pools (``gateway.pool_routes``),
        the batch and async job API (``gateway.routes_jobs``), then the route table
        (``gateway.routes``), whose handler is returned to await, not awaited here."""
        if scope["path"].startswith(_CONTROL_PREFIXES):
            return self._serve_control(scope, receive, send)
        return routes.dispatch(self, scope, receive, send)

    async def _serve_control(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith(rollout_routes.PREFIX):
            body = await read_whole(receive) if method == "POST" else b""
            await rollout_routes.handle(self.rollouts, method, path, body, send)
        elif path.startswith(scaling_routes.PREFIX):
            body = await read_whole(receive) if method == "POST" else b""
            await scaling_routes.handle(self.autoscalers, method, path, body, send)
        elif path.startswith(pool_routes.PREFIX):
            body = await read_whole(receive) if method == "POST" else b""
            await pool_routes.handle(self.pools, method, path, body, send)
        else:
            await self.jobs_api.handle(scope, receive, send)

    def request_ids(self, scope: Scope) -> tuple[str, dict[str, str]]:
        headers = scope.get(HEADERS)  # the security layer's, when it read them
        if headers is None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        return self.new_request_id(), headers

    def new_request_id(self, door: str = "") -> str:
        """A request id unique in this gateway (it keys the admission queue); ``door`` tags
        requests that came another way than HTTP (``grpc-``, ``ws-``)."""
        return f"{self._id_prefix}{door}{next(self._ids)}"

    def handle_inference(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return inference.handle(self, scope, receive, send)  # ``gateway.inference``

    # For the server's protocol (``gateway.protocol``): the requests it may begin from its
    # parser's callback once they are whole, and how (``gateway.inference.start``).
    early_paths = frozenset(path.encode() for path in INFERENCE_PATHS)

    def early_start(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """The inference request begun, and the ASGI app to run it on; None when it must take
        the whole way."""
        return inference.start(self, path, headers, body)

    async def handle_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/tokenize`` and ``/detokenize``: relayed to a replica of the named model."""
        body = await read_whole(receive)
        rid, headers = self.request_ids(scope)
        try:
            view = parse_token_request(
                request_id=rid,
                client_request_id=headers.get("x-request-id") or None,
                path=scope["path"],
                body=body,
                deployments=self.deployments,
                adapters=self.catalog.lazy_replica_adapters(),
                now_s=self.clock.now(),
                names_known=self.catalog.names_known,
            )
        except ShipitError as exc:
            await self.refuse_request(exc, send)
            return
        router = self.routers[view.deployment]
        router.on_request()
        auth = self.upstream_auth.get(view.deployment)
        await forward_tokens(
            view,
            body,
            router,
            send,
            upstream=self._get_upstream(),
            adapters=self._get_adapters,
            credentials=auth.headers if auth else None,
        )

    async def refuse_request(self, exc: ShipitError, send: Send) -> None:
        """A refused request in the vocabulary: 400 for a bad body, 404 for an unknown model."""
        kind = kind_of(exc)
        await send_json(send, kind.status, error_json(kind, exc.message, exc.field))
        self.metrics.request_done("-", kind.status, "-")

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the models a replica can serve now."""
        return self.catalog.models()

    def status(self, window_s: float | None = None) -> dict[str, Any]:
        """What ``shipit up`` prints and operators read (``gateway.status``)."""
        return fleet_status(self, window_s)


def create_gateway(
    config: ShipitConfig,
    *,
    routers: Mapping[str, RouterService] | None = None,
    clock: Clock | None = None,
    upstream_factory: Callable[[], Upstream] | None = None,
    on_startup: list[Hook] | None = None,
    on_shutdown: list[Hook] | None = None,
    monitor: bool = True,
    pool: ReplicaPool | None = None,
    decisions: DecisionLog = NO_LOG,
    versions: VersionPool | None = None,
    rollout_home: Path | None = None,
    keys: KeyStore | None = None,
    audit: AuditLog | None = None,
    replica_admin_token: str | None = None,
    request_schemas: Mapping[str, Any] | None = None,
    console: bool = False,
) -> Gateway:
    """A gateway app (an ASGI callable). Routers default to one per deployment. With a
    ``pool`` (``backends.Fleet``), each deployment of local replicas gets an autoscaler.
    ``keys`` and ``audit`` default to the files ``gateway.auth`` names (``gateway.auth``).
    ``replica_admin_token`` is sent as a bearer token on every control call to replicas
    (health, metrics, adapters, KV events, startup reports), never on proxied requests.
    ``request_schemas`` are the body schemas ``/openapi.json`` describes (``gateway.openapi``)."""
    clock = clock or RealClock()
    keys, audit = open_stores(config, keys, audit)
    if routers is None:
        routers = {d.name: RouterService(d, clock=clock, log=decisions) for d in config.deployments}
    first = config.deployments[0].retries

    control = bearer(replica_admin_token) if replica_admin_token else {}

    def default_upstream() -> Upstream:
        return AiohttpUpstream(
            connect_timeout_s=first.connect_timeout_s,
            read_timeout_s=first.read_timeout_s,
            control_headers=control,
        )

    return Gateway(
        config,
        routers,
        clock=clock,
        upstream_factory=upstream_factory or default_upstream,
        on_startup=list(on_startup or []),
        on_shutdown=list(on_shutdown or []),
        monitor=monitor,
        pool=pool,
        decisions=decisions,
        versions=versions,
        rollout_home=rollout_home,
        keys=keys,
        audit=audit,
        request_schemas=request_schemas,
        console=console,
    )


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> Any:
    """Run the lifespan around a block (tests drive the app without a server)."""
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()
