"""``shipit up``: the gateway in front of local replica processes or external endpoints.

Thin: reads ``shipit.yaml`` (flags override it), builds one router per deployment, the fleet
(local processes and/or ``--replica-url`` endpoints, reported to each router's replica
registry; autoscaled when a deployment has an ``autoscaling:`` block or an autoscaling flag is
given) and the gateway app, serves it, and prints
where it listens and the replicas' states. Ctrl-C or SIGTERM: the server stops accepting,
finishes open requests, then the fleet drains and stops the replicas it started; a second
signal only says the drain is in progress, a third forces the stop. Exit status: 0 when
everything drained, 1 when ``graceful_shutdown_s`` cut requests, 130 when forced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import uvloop
from rich.console import Console
from rich.markup import escape

from shipit.backends.base import ReplicaBackend
from shipit.backends.fleet import Fleet
from shipit.backends.local import LocalProcessBackend
from shipit.backends.static import StaticBackend
from shipit.capacity import parse_gpu_model
from shipit.cli.up_ray import ray_backends
from shipit.cli.up_report import report as _report
from shipit.cli.up_security import apply_security_flags, check_security
from shipit.cli.up_workers import Workers, configure_workers
from shipit.config.gateway import (
    ROUTING_POLICIES,
    ConfigError,
    ShipitConfig,
    apply_overrides,
    load_config,
)
from shipit.config.upstream_auth import UpstreamAuthError
from shipit.core.clock import RealClock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.errors import InvalidRequestError
from shipit.core.replica_admin import ADMIN_TOKEN_ENV
from shipit.gateway.app import Hook, create_gateway
from shipit.gateway.server import Stopped, bind_socket, serve
from shipit.replica.openapi import request_schemas
from shipit.services.decision_log import JsonlDecisionLog
from shipit.services.router import RouterService

if TYPE_CHECKING:
    from shipit.gateway.rpc import GrpcDoor
    from shipit.telemetry.instruments import ControlPlaneMetrics

EXAMPLES = """
Examples:

  shipit up                                   # 2 local replicas of the default model on :8000
  shipit up --replicas 4 --routing prefix_cache --simulate H100:llama-3.1-8b
  shipit up --replica-url http://10.0.0.5:8000/v1 --replica-url http://10.0.0.6:8000/v1 --model m
  shipit up --config shipit.yaml --port 9000
  shipit up --simulate H100:llama-3.1-8b --min-replicas 0 --max-replicas 3   # autoscaled
  shipit up --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem   # keys required (shipit keys)
  shipit up --backend ray --ray-address 10.0.0.2:6379 --simulate H100:llama-3.1-8b   # Ray actors
  shipit up --fleet fleet.yaml          # planes' gateways + a global front door (docs/fleet.md)
"""


def _decision_log(path: Path | None, console: Console) -> DecisionLog:
    if path is None:
        return NO_LOG
    try:
        log = JsonlDecisionLog(path)
    except OSError as exc:
        raise ConfigError(
            f"--record-decisions {path}: cannot write there ({exc.strerror}); give a path in a "
            "writable directory",
            field="record_decisions",
        ) from exc
    console.print(f"recording decisions in {path}")
    return log


def _rollout_home() -> Path:
    """Where rollouts persist their state: ``$SHIPIT_HOME/rollouts``."""
    from shipit.config.paths import shipit_home

    return shipit_home() / "rollouts"


class _StopError(Exception):
    """SIGTERM arrived outside the server's own signal handling."""


def register(app: typer.Typer) -> None:
    app.command(
        "up",
        help="Start the gateway and its replicas (OpenAI-compatible on --port).\n" + EXAMPLES,
        rich_help_panel=None,
    )(up)


def build_config(
    config: Path | None,
    *,
    port: int | None,
    host: str | None,
    replicas: int | None,
    routing: str | None,
    model: str | None,
    simulate: str | None,
    replica_url: list[str],
    backend: str | None = None,
    autoscaling: dict[str, float | None] | None = None,
    security: dict[str, Any] | None = None,
) -> ShipitConfig:
    """The file, then the flags (applied to the first deployment). Any autoscaling flag turns
    autoscaling on (defaults for the fields not given); ``--replicas`` then sets how many
    start and must lie within the bounds."""
    cfg = load_config(config)
    over: dict[str, Any] = {}
    if simulate is not None:
        over["simulate"] = simulate
        if model is None:
            try:
                model = parse_gpu_model(simulate).model
            except InvalidRequestError as exc:
                raise ConfigError(exc.message, field="simulate") from exc
    if model is not None:
        over["model"] = model
    if routing is not None:
        over["routing.policy"] = routing
    if replica_url:
        over["replica_urls"] = list(replica_url)
        if replicas is None:
            replicas = 0  # external endpoints only, unless asked for local ones too
    if replicas is not None:
        over["replicas"] = replicas
    if backend is not None:
        over["backend"] = backend
    for field, value in (autoscaling or {}).items():
        if value is not None:
            over[f"autoscaling.{field}"] = value
    cfg = apply_overrides(cfg, port=port, host=host, deployment=over)
    cfg = apply_security_flags(cfg, **(security or {}))
    _check_servable(cfg)
    return cfg


def _check_servable(cfg: ShipitConfig) -> None:
    """A deployment with no local replica, no external one and no autoscaling could never
    answer: every request would wait out the cold-start hold for a 503."""
    for d in cfg.deployments:
        if d.replicas == 0 and not d.replica_urls and d.autoscaling is None:
            raise ConfigError(
                f"deployment {d.name!r}: replicas is 0, with no replica_urls and no "
                "autoscaling block, so nothing could ever serve it; start local replicas "
                "(--replicas N), register external ones (--replica-url URL), or let it scale "
                "from zero (--min-replicas 0 --max-replicas N)",
                field="replicas",
            )


def up(
    config: Path | None = typer.Option(None, "--config", "-c", help="shipit.yaml to read."),
    fleet_file: Path | None = typer.Option(
        None,
        "--fleet",
        help="fleet.yaml: start each plane's gateway (its gateway: section, on its port) and a "
        "global front door on front_door.port that routes by region and fails over. See "
        "docs/fleet.md#live-fleet.",
    ),
    port: int | None = typer.Option(None, "--port", help="Gateway port (default 8000)."),
    host: str | None = typer.Option(None, "--host", help="Gateway address (default 127.0.0.1)."),
    replicas: int | None = typer.Option(None, "--replicas", "-n", help="Local replicas to start."),
    routing: str | None = typer.Option(
        None, "--routing", help=f"Routing policy: {', '.join(ROUTING_POLICIES)}."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Model the replicas serve."),
    simulate: str | None = typer.Option(
        None, "--simulate", help="Simulated accelerator for local replicas: GPU:MODEL."
    ),
    replica_url: list[str] = typer.Option(
        [], "--replica-url", help="An external OpenAI-compatible replica (repeatable)."
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="Where the replicas run: local (processes here), kubernetes (pods) or ray (actors "
        "on a Ray cluster; pip install 'shipit\\[ray]'). See docs/ray.md.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --backend ray: the Ray cluster's head, host:port (or 'auto', ray://...); "
        "default $RAY_ADDRESS, else a single-node Ray started here.",
    ),
    min_replicas: int | None = typer.Option(
        None, "--min-replicas", help="Autoscaling lower bound (0: scale to zero)."
    ),
    max_replicas: int | None = typer.Option(
        None, "--max-replicas", help="Autoscaling upper bound."
    ),
    autoscaling_window_s: float | None = typer.Option(
        None, "--autoscaling-window-s", help="Autoscaling stable window (s)."
    ),
    scale_down_delay_s: float | None = typer.Option(
        None, "--scale-down-delay-s", help="A lower target must hold this long (s)."
    ),
    target_concurrency: float | None = typer.Option(
        None,
        "--target-concurrency",
        help="Autoscaling: in-flight + queued requests per replica to aim at (a float; the "
        "gateway's per-replica cap is queueing.max_concurrency in shipit.yaml).",
    ),
    record_decisions: Path | None = typer.Option(
        None,
        "--record-decisions",
        help="Write every routing, admission, health, lifecycle and autoscaling decision, with "
        "the snapshot it was taken from, to this JSON-lines file (replayable in the simulator).",
    ),
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        help="Also serve the gRPC API (shipit.v1.Inference, health, reflection) on this port of "
        "the gateway's address (0: any free port); off by default. See docs/protocols.md.",
    ),
    state_dir: Path | None = typer.Option(
        None,
        "--state-dir",
        help="Where rollouts keep their state, so a restart resumes them (default "
        "$SHIPIT_HOME/rollouts).",
    ),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        help="Serve without API keys even on a non-loopback --host (anyone who can reach the "
        "port can use it; keys are otherwise required there).",
    ),
    keys_file: Path | None = typer.Option(
        None, "--keys-file", help="API key file (default $SHIPIT_HOME/keys.json)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM key for --tls-cert."),
    log_dir: Path | None = typer.Option(
        None,
        "--log-dir",
        help="Write the local replicas' logs here and keep them (default: a temporary "
        "directory removed on exit).",
    ),
    keep_logs: bool = typer.Option(
        False, "--keep-logs", help="Keep the temporary replica log directory on exit."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
    gateway_workers: int | None = typer.Option(
        None,
        "--gateway-workers",
        help="Gateway processes on the port (SO_REUSEPORT; default gateway.workers, 1). The "
        "first owns the replicas; each has its own queue and prefix index. See docs/gateway.md.",
    ),
    console_on: bool = typer.Option(
        True,
        "--console/--no-console",
        help="Serve the web console at /ui (fleet page, VRAM calculator, recommender).",
    ),
) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if fleet_file is not None:  # one process per plane, this one the front door (cli.up_fleet)
        from shipit.cli.up_fleet import up_fleet

        single: dict[str, object] = {
            "--config": config,
            "--port": port,
            "--host": host,
            "--replicas": replicas,
        }
        single |= {"--simulate": simulate, "--model": model, "--replica-url": replica_url}
        up_fleet(
            fleet_file, log_dir=log_dir, keep_logs=keep_logs, log_level=log_level, single=single
        )
        return
    console = Console(stderr=True)
    try:
        cfg = build_config(
            config,
            port=port,
            host=host,
            replicas=replicas,
            routing=routing,
            model=model,
            simulate=simulate,
            replica_url=replica_url,
            backend=backend,
            autoscaling={
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "autoscaling_window_s": autoscaling_window_s,
                "scale_down_delay_s": scale_down_delay_s,
                "target_concurrency": target_concurrency,
            },
            security={
                "no_auth": no_auth,
                "keys_file": keys_file,
                "tls_cert": tls_cert,
                "tls_key": tls_key,
            },
        )
        cfg, worker = configure_workers(cfg, gateway_workers, os.environ)
        if worker is not None:  # the first worker records decisions and serves gRPC
            record_decisions = grpc_port = None
        check_security(cfg, console)
        clock = RealClock()
        decisions = _decision_log(record_decisions, console)
        routers = {d.name: RouterService(d, clock=clock, log=decisions) for d in cfg.deployments}
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    try:
        sock = bind_socket(cfg.gateway.host, cfg.gateway.port, reuse_port=cfg.gateway.workers > 1)
    except OSError as exc:
        console.print(
            f"[red]error:[/] cannot listen on {cfg.gateway.host}:{cfg.gateway.port}: {exc}"
        )
        raise typer.Exit(2) from exc
    # One admin token per run (or the operator's, for external shipit replicas): the local
    # replicas get it in their environment, the gateway sends it on its control calls.
    admin_token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(32)
    local = LocalProcessBackend(log_dir=log_dir, admin_token=admin_token)
    remove_logs = log_dir is None and not keep_logs
    external = StaticBackend({d.name: d.replica_urls for d in cfg.deployments})
    registrars = {name: router.registry for name, router in routers.items()}
    # backend: kubernetes: that deployment's replicas are pods, watched by their own backend
    # (the client library is imported only then).
    pods: dict[str, ReplicaBackend] = {}
    bind_metrics: list[Callable[[ControlPlaneMetrics], None]] = []
    if any(d.backend == "kubernetes" for d in cfg.deployments):
        from shipit.backends.k8s_pods import settings_for
        from shipit.backends.kubernetes import KubernetesBackend

        for d in cfg.deployments:
            if d.backend == "kubernetes":
                settings = settings_for(cfg, d)
                k8s = KubernetesBackend(settings, deployment=d.name, registrars=registrars)
                pods[d.name] = k8s
                bind_metrics.append(k8s.bind_metrics)
    if any(d.backend == "ray" for d in cfg.deployments) or ray_address:
        try:
            pods |= ray_backends(cfg, ray_address, admin_token, console)
        except ConfigError as exc:  # escaped: "shipit[ray]" is not Rich markup
            console.print(f"[red]error:[/] {escape(exc.message)}")
            sock.close()
            raise typer.Exit(2) from exc
    fleet = Fleet(cfg.deployments, registrars, local=local, external=external, backends=pods)
    start_hooks: list[Hook] = [fleet.start]
    stop_hooks: list[Hook] = [fleet.stop]
    if cfg.gateway.workers > 1 and worker is None:  # the others start once replicas have URLs
        workers = Workers(cfg.gateway.workers, sock.getsockname()[1], lambda: _urls(routers))
        start_hooks.append(workers.start)
        stop_hooks.insert(0, workers.stop)
    door: GrpcDoor | None = None
    if grpc_port is not None:  # grpc is imported only when its door is asked for
        from shipit.gateway.rpc import GrpcDoor
        from shipit.gateway.rpc import hooks as grpc_hooks

        door = GrpcDoor(cfg.gateway.host, grpc_port)
        grpc_start, grpc_stop = grpc_hooks(door, lambda: gateway)
        start_hooks.append(grpc_start)
        stop_hooks.insert(0, grpc_stop)
    try:
        gateway = create_gateway(
            cfg,
            routers=routers,
            clock=clock,
            on_startup=start_hooks,
            on_shutdown=stop_hooks,
            pool=fleet,
            decisions=decisions,
            versions=fleet,
            rollout_home=state_dir or _rollout_home(),
            replica_admin_token=admin_token,
            request_schemas=request_schemas(),
            console=console_on,
        )
    except (UpstreamAuthError, ConfigError) as exc:  # unreadable credential or tokenizer path
        console.print(f"[red]error:[/] {exc.message}")
        sock.close()
        if remove_logs:
            shutil.rmtree(local.log_dir, ignore_errors=True)
        raise typer.Exit(2) from exc
    for bind in bind_metrics:  # node cordons count in the gateway's /metrics
        bind(gateway.control_metrics)
    scheme = "https" if cfg.gateway.tls.enabled else "http"
    listen = f"{scheme}://{cfg.gateway.host}:{sock.getsockname()[1]}"

    def on_listening() -> None:
        for d in cfg.deployments:
            console.print(
                f"[bold]shipit gateway[/] listening on {listen}/v1  deployment {d.name!r}: "
                f"model {d.model_name!r}, {d.initial_replicas} {d.backend} + {len(d.replica_urls)} "
                f"external replicas, routing {d.routing.policy}, queue {d.queueing.max_queue}, "
                f"at most {d.queueing.max_concurrency} in flight per replica"
            )
            if d.autoscaling is not None:
                a = d.autoscaling
                console.print(
                    f"  autoscaling {a.min_replicas}..{a.max_replicas} replicas, "
                    f"target {a.target_concurrency:g} x {a.target_utilization:g} per replica over "
                    f"{a.autoscaling_window_s:g}s (panic {a.panic_window_s:g}s), scale-down "
                    f"delay {a.scale_down_delay_s:g}s, idle timeout {a.idle_timeout_s:g}s"
                )
                if a.ttft_slo_s is not None:
                    console.print(
                        f"  [yellow]warning:[/] autoscaling.ttft_slo_s ({a.ttft_slo_s:g}s) is "
                        "used by the fleet simulator only; live, the TTFT guard stays off"
                    )
        if console_on:
            console.print(f"web console: {listen}/ui/  (--no-console turns it off)")
        if door is not None:
            console.print(f"gRPC (shipit.v1.Inference) on {cfg.gateway.host}:{door.port}")
        kept = "" if not remove_logs else " (removed on exit; --keep-logs keeps them)"
        console.print(f"replica logs: {local.log_dir}{kept}")
        timeout_s = max(d.startup_timeout_s for d in cfg.deployments)
        reporter.append(asyncio.ensure_future(_report(gateway, console, timeout_s)))

    reporter: list[asyncio.Future[None]] = []

    def _term(signum: int, frame: object) -> None:
        raise _StopError()

    signal.signal(signal.SIGTERM, _term)
    stopped = Stopped.DRAINED
    try:
        # uvloop, as the replicas run: uvicorn's ``loop="uvloop"`` applies only to loops it
        # creates, and this one is ours.
        stopped = uvloop.run(
            serve(
                gateway,
                sock,
                graceful_shutdown_s=cfg.gateway.graceful_shutdown_s,
                log_level="warning",
                on_listening=on_listening,
            )
        )
    except (KeyboardInterrupt, _StopError):
        stopped = Stopped.FORCED  # a signal before the server could handle it
    finally:
        if fleet.handles:  # interrupted before the lifespan could stop them
            asyncio.run(_stop_fleet(fleet, local, force=stopped is Stopped.FORCED))
        for task in reporter:
            task.cancel()
        if isinstance(decisions, JsonlDecisionLog):
            decisions.close()
            console.print(f"{decisions.count} decisions recorded in {decisions.path}")
        if remove_logs:
            shutil.rmtree(local.log_dir, ignore_errors=True)
    code = _EXIT[stopped]
    if stopped is Stopped.DRAINED:
        console.print("shipit gateway stopped; replicas drained and stopped")
    elif stopped is Stopped.CUT:
        console.print(
            f"[yellow]shipit gateway stopped; requests still open after graceful_shutdown_s "
            f"({cfg.gateway.graceful_shutdown_s:g}s) were cut[/] (exit {code})"
        )
    else:
        console.print(
            f"[yellow]shipit gateway stop forced; open requests were cut[/] (exit {code})"
        )
    sys.stdout.flush()
    if code:
        raise typer.Exit(code)


# 0: everything open finished; 1: the graceful-shutdown timeout cut requests; 130 (128 + SIGINT,
# the shell's convention for an interrupted command): a repeated signal forced the stop.
_EXIT = {Stopped.DRAINED: 0, Stopped.CUT: 1, Stopped.FORCED: 130}


def _urls(routers: dict[str, RouterService]) -> dict[str, list[str]]:
    return {name: [v.url for v in r.views()] for name, r in routers.items()}


async def _stop_fleet(fleet: Fleet, local: LocalProcessBackend, *, force: bool) -> None:
    if force:
        for backend, handle in list(fleet.handles):
            if backend is local:
                await local.kill(handle)
    await fleet.stop()
