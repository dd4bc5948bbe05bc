"""``shipit up --gateway-workers N``: N gateway processes serving one port (SO_REUSEPORT).

The process the user started (the first worker) owns the fleet: it starts and stops the
replicas, records decisions, serves gRPC and runs rollouts. Once its replicas are registered it
starts N-1 more ``shipit up`` processes with the same arguments, told through ``WORKER_ENV``
which replica URLs to serve (static URLs, as ``--replica-url`` gives them): they are plain
gateways over the first one's replicas and start nothing. On stop the first worker stops the
others (they drain their own requests) before it stops the replicas.

Each worker keeps its own admission queue and prefix index: a conversation whose turns land on
different workers may miss the prefix cache a single gateway would have hit, and queues are per
worker. Per-replica concurrency caps are split (each worker admits ``max_concurrency // N``,
at least 1), so a replica never sees more than its cap from all workers together. Because the
replica set is fixed when the workers start, autoscaling and the kubernetes and ray backends
(whose replicas come and go) are refused with more than one worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shipit.backends.child import die_with_parent
from shipit.config.gateway import ConfigError, ShipitConfig, parse_config

WORKER_ENV = "SHIPIT_GATEWAY_WORKER"

logger = logging.getLogger("shipit.gateway")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the first worker tells the others: their index and each deployment's replica
    URLs."""

    index: int
    urls: Mapping[str, tuple[str, ...]]


def worker_spec(environ: Mapping[str, str]) -> WorkerSpec | None:
    """This process's spec when it is a worker started by another ``shipit up``."""
    raw = environ.get(WORKER_ENV)
    if not raw:
        return None
    data = json.loads(raw)
    return WorkerSpec(int(data["index"]), {k: tuple(v) for k, v in data["urls"].items()})


def check_workers(cfg: ShipitConfig) -> None:
    """More than one worker needs a fleet whose replica URLs are fixed once started."""
    if cfg.gateway.workers == 1:
        return
    for d in cfg.deployments:
        if d.autoscaling is not None:
            raise ConfigError(
                f"gateway.workers is {cfg.gateway.workers} but deployment {d.name!r} is "
                "autoscaled; the other gateway workers would not see replicas it adds or "
                "removes. Use --gateway-workers 1 with autoscaling, or fix the replica count",
                field="gateway.workers",
            )
        if d.backend != "local":
            raise ConfigError(
                f"gateway.workers is {cfg.gateway.workers} but deployment {d.name!r} uses "
                f"backend {d.backend!r}, whose replicas come and go; more than one gateway "
                "worker serves local replicas and --replica-url endpoints only",
                field="gateway.workers",
            )


def split_concurrency(cfg: ShipitConfig) -> ShipitConfig:
    """Each worker admits ``max_concurrency // workers`` (at least 1) per replica, so the
    workers together stay within a replica's cap."""
    n = cfg.gateway.workers
    if n == 1:
        return cfg
    data = cfg.model_dump(exclude_unset=True)
    for d, given in zip(cfg.deployments, data.setdefault("deployments", []), strict=False):
        given.setdefault("queueing", {})["max_concurrency"] = max(
            1, d.queueing.max_concurrency // n
        )
    return parse_config(data, source="gateway.workers")


def worker_config(cfg: ShipitConfig, spec: WorkerSpec) -> ShipitConfig:
    """The configuration a worker serves: the first worker's replicas as external URLs, none
    of its own."""
    data = cfg.model_dump(exclude_unset=True)
    for given in data.setdefault("deployments", []):
        name = given.get("name", cfg.deployments[0].name)
        given["replicas"] = 0
        given["replica_urls"] = list(spec.urls.get(name, ()))
        given.pop("autoscaling", None)
    return parse_config(data, source="gateway worker")


@dataclass
class Workers:
    """The other gateway workers, started by the first one's start hook and stopped first by
    its stop hook."""

    count: int
    port: int
    urls: Callable[[], dict[str, list[str]]]  # each deployment's replica URLs, read at start
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self) -> list[str]:
        # The same command line; a later --port wins, so port 0 becomes the port now bound.
        return [sys.executable, "-m", "shipit", *sys.argv[1:], "--port", str(self.port)]

    async def start(self) -> None:
        urls = self.urls()
        for i in range(1, self.count):
            env = dict(os.environ)
            env[WORKER_ENV] = json.dumps({"index": i, "urls": urls})
            preexec = die_with_parent(signal.SIGTERM)
            self.procs.append(subprocess.Popen(self.argv(), env=env, preexec_fn=preexec))
        logger.info("started %d more gateway workers: %s", self.count - 1, self.pids())

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 60)
            except subprocess.TimeoutExpired:
                logger.warning("gateway worker %d did not stop in 60s; killing it", p.pid)
                p.kill()
                await asyncio.to_thread(p.wait)


def configure_workers(
    cfg: ShipitConfig, workers: int | None, environ: Mapping[str, str]
) -> tuple[ShipitConfig, WorkerSpec | None]:
    """``--gateway-workers`` over ``gateway.workers``, checked; the caps split; and, in a
    worker the first one started, the configuration it serves."""
    if workers is not None:
        data = cfg.model_dump(exclude_unset=True)
        data.setdefault("gateway", {})["workers"] = workers
        cfg = parse_config(data, source="--gateway-workers")
    check_workers(cfg)
    cfg = split_concurrency(cfg)
    spec = worker_spec(environ)
    return (cfg if spec is None else worker_config(cfg, spec)), spec
