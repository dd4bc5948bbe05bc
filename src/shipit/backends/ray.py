"""``RayBackend``: replicas as Ray actors spread across a Ray cluster's nodes.

``connect`` joins the cluster (the configured address, else ``$RAY_ADDRESS``, else a single-node
Ray started in this process with the custom resources the deployments ask for); Ray is imported
only there, so the core install never needs it. ``start`` places each replica
(``ray_placement.choose_node``: the node with room for its resources that runs the fewest of the
deployment's replicas; soft node affinity, so a node that dies meanwhile falls back to Ray's
scheduler), creates a ``ray_actor.ReplicaActor`` there reserving those resources, and has it
spawn ``shipit replica`` on a free port of the node: the handle's URL. Each actor keeps one call
pending (``wait``) as the liveness watch: when the replica exits, or its actor or node dies, the
call finishes and ``alive`` turns false, so the lifecycle policy reaps the replica and the
autoscaler starts a replacement on a node that is still there. ``stop`` drains (SIGTERM on the
node, SIGKILL after the drain timeout) and then kills the actor. It decides nothing else and
never imports the router or the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipit.backends.base import ReplicaHandle, ReplicaSpec
from shipit.backends.ray_placement import (
    RayBackendError,
    demand,
    node_views,
    not_installed,
    placement_timed_out,
    replica_args,
    split_address,
    unreachable,
)
from shipit.config.ray_backend import RayBackendConfig
from shipit.core.replica_admin import ADMIN_TOKEN_ENV

log = logging.getLogger("shipit.backends.ray")
STOP_MARGIN_S = 15.0  # beyond the actor's own drain + kill grace, for the call itself
PROBE_TIMEOUT_S = 5.0
SUSPECT_S = 60.0  # how long new replicas avoid a node where an actor died
# Ray ships the driver's working directory to the workers when the driver runs under `uv run`;
# the replicas run the shipit installed on each node instead.
_NO_UV_HOOK = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"


@dataclass
class _Replica:
    handle: ReplicaHandle
    actor: Any
    watch: Any  # the pending ``wait`` call
    node_id: str
    want: dict[str, float]
    drain_timeout_s: float
    gone: str | None = None  # why it is no longer alive


def cluster_address(configs: Mapping[str, RayBackendConfig], env: str | None) -> str | None:
    """The one cluster the deployments name (else ``env``, ``$RAY_ADDRESS``); None: start one."""
    named = sorted({c.address for c in configs.values() if c.address})
    if len(named) > 1:
        raise RayBackendError(
            f"deployments name different Ray clusters ({', '.join(named)}): one gateway talks "
            "to one Ray cluster; give every ray_backend the same address"
        )
    return named[0] if named else (env or None)


def local_resources(configs: Mapping[str, RayBackendConfig]) -> dict[str, float]:
    """The custom resources a single-node Ray started here offers: whatever the deployments
    ask for, plenty of it (CPUs, GPUs and memory are the machine's)."""
    out: dict[str, float] = {}
    for cfg in configs.values():
        for name in demand(cfg):
            if name not in ("CPU", "GPU", "memory"):
                out[name] = 10_000.0
    return out


class RayBackend:
    kind = "ray"  # the ``backend`` of its replicas' records
    keeps_replicas_on_exit = False  # the actors belong to this gateway: they go when it goes

    def __init__(
        self,
        configs: Mapping[str, RayBackendConfig],
        *,
        address: str | None = None,
        admin_token: str | None = None,
    ) -> None:
        """``configs``: each Ray deployment's settings. ``address`` overrides theirs."""
        self.configs = dict(configs)
        self.address = address or cluster_address(self.configs, os.environ.get("RAY_ADDRESS"))
        self._admin_token = admin_token
        self.replicas: dict[str, _Replica] = {}
        self.placements: list[tuple[str, str]] = []  # (replica id, reason), for logs and tests
        self._ray: Any = None
        self._actor_cls: Any = None
        self._owns_ray = False
        self._closed = False
        self._seq = 0
        self._lost: dict[str, float] = {}  # node id -> when an actor there died

    # ----- the cluster ----------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster (or start a single-node one); idempotent. Raises ``RayBackendError``
        with what to do when Ray is missing or the cluster cannot be reached."""
        if self._ray is not None:
            return
        os.environ.setdefault(_NO_UV_HOOK, "0")
        try:
            import ray
        except ImportError as exc:
            raise not_installed() from exc
        if ray.is_initialized():  # someone in this process already joined (tests, notebooks)
            self._ray = ray
            return
        address = self.address
        target = split_address(address) if address else None
        if address and target is not None:
            try:
                socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()
            except OSError as exc:
                raise unreachable(address, exc.strerror or str(exc)) from exc
        first = next(iter(self.configs.values()), RayBackendConfig())
        options: dict[str, Any] = {
            "namespace": first.namespace,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address is None:
            options |= {"include_dashboard": False, "resources": local_resources(self.configs)}
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise unreachable(address or "a new local Ray", str(exc)) from exc
        except RuntimeError as exc:  # e.g. Ray versions differ between here and the cluster
            raise RayBackendError(
                f"cannot join the Ray cluster at {address or 'a new local Ray'}: {exc}"
            ) from exc
        self._ray, self._owns_ray = ray, True
        log.info("joined Ray cluster %s", address or "(single node, started here)")

    def nodes(self) -> list[dict[str, Any]]:
        self.connect()
        raw: list[dict[str, Any]] = self._ray.nodes()
        return raw

    def config_for(self, deployment: str) -> RayBackendConfig:
        return self.configs.get(deployment) or RayBackendConfig()

    # ----- the ReplicaBackend protocol ------------------------------------------------------
    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        self.connect()
        started: list[ReplicaHandle] = []
        for _ in range(count):  # one by one: each placement sees the ones before it
            started.append(await self._start_one(spec))
        return started

    async def _start_one(self, spec: ReplicaSpec) -> ReplicaHandle:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from shipit.backends.ray_actor import ReplicaActor
        from shipit.backends.ray_placement import choose_node

        ray = self._ray
        cfg = self.config_for(spec.deployment)
        want = demand(cfg)
        replica_id = f"{spec.deployment}-{os.getpid()}-{self._seq}"
        self._seq += 1
        options: dict[str, Any] = {
            "num_cpus": cfg.num_cpus,
            "num_gpus": cfg.num_gpus,
            "resources": {k: v for k, v in want.items() if k not in ("CPU", "GPU", "memory")},
            "max_restarts": 0,  # a dead replica is replaced by the fleet, not revived by Ray
            "max_concurrency": 8,  # ``wait`` stays pending while ``stop`` runs
        }
        if cfg.memory_bytes is not None:
            options["memory"] = cfg.memory_bytes
        if cfg.runtime_env is not None:
            options["runtime_env"] = cfg.runtime_env
        why = "spread is off: Ray's scheduler places it"
        if cfg.spread:
            nodes = node_views(await asyncio.to_thread(self.nodes))
            placement = choose_node(nodes, want, *self._counts(spec), avoid=self._suspect())
            why = placement.reason
            options["scheduling_strategy"] = (
                NodeAffinitySchedulingStrategy(placement.node_id, soft=True)
                if placement.node_id is not None
                else "SPREAD"  # nothing fits now: Ray holds it, then spreads what it places
            )
        if self._actor_cls is None:
            self._actor_cls = ray.remote(ReplicaActor)
        actor = self._actor_cls.options(**options).remote(replica_id)
        env = dict(spec.env)
        if self._admin_token:
            env[ADMIN_TOKEN_ENV] = self._admin_token
        launched = actor.launch.remote(replica_args(spec), env, cfg.replica_host, cfg.log_dir)
        began = time.monotonic()
        try:
            info = await asyncio.wait_for(
                asyncio.wrap_future(launched.future()), cfg.placement_timeout_s
            )
        except TimeoutError as exc:
            ray.kill(actor, no_restart=True)
            waited = time.monotonic() - began
            raise placement_timed_out(spec.deployment, want, round(waited), why) from exc
        except Exception:
            ray.kill(actor, no_restart=True)
            raise
        host = f"[{info['host']}]" if ":" in info["host"] else info["host"]  # IPv6
        url = f"http://{host}:{info['port']}"
        handle = ReplicaHandle(replica_id, url, spec.deployment, log_path=info["log_path"])
        watch = actor.wait.remote()
        self.replicas[replica_id] = _Replica(
            handle, actor, watch, info["node_id"], want, spec.drain_timeout_s
        )
        self.placements.append((replica_id, why))
        log.info("replica %s on node %s (%s): %s", replica_id, info["node_ip"], url, why)
        return handle

    def _counts(self, spec: ReplicaSpec) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
        """Per node id: the deployment's live replicas, and what all of ours hold there."""
        ours: Counter[str] = Counter()
        used: dict[str, dict[str, float]] = defaultdict(dict)
        for r in self.replicas.values():
            if not self._check(r):
                continue
            if r.handle.deployment == spec.deployment:
                ours[r.node_id] += 1
            for k, v in r.want.items():
                used[r.node_id][k] = used[r.node_id].get(k, 0.0) + v
        return dict(ours), dict(used)

    def _suspect(self) -> frozenset[str]:
        """Nodes where an actor died lately: Ray takes a while (its GCS health checks) to
        declare a lost node dead, and a replacement aimed there would wait for that."""
        now = time.monotonic()
        return frozenset(n for n, at in self._lost.items() if now - at < SUSPECT_S)

    def node_of(self, replica_id: str) -> str | None:
        r = self.replicas.get(replica_id)
        return r.node_id if r is not None else None

    def list(self) -> list[ReplicaHandle]:
        return [r.handle for r in self.replicas.values() if self._check(r)]

    def alive(self, handle: ReplicaHandle) -> bool:
        r = self.replicas.get(handle.replica_id)
        return r is not None and self._check(r)

    def failure(self, replica_id: str) -> str | None:
        r = self.replicas.get(replica_id)
        return r.gone if r is not None else None

    def _check(self, r: _Replica) -> bool:
        """Whether the replica's watch is still pending; if not, note why it ended."""
        if r.gone is not None:
            return False
        ready, _ = self._ray.wait([r.watch], timeout=0)
        if not ready:
            return True
        try:
            code = self._ray.get(r.watch, timeout=0)
            r.gone = f"replica process exited with status {code}"
        except Exception as exc:  # RayActorError: the actor or its node died
            r.gone = f"{type(exc).__name__}: actor or node died"
            self._lost[r.node_id] = time.monotonic()
        log.warning("replica %s is gone: %s", r.handle.replica_id, r.gone)
        return False

    async def stop(self, handle: ReplicaHandle) -> None:
        r = self.replicas.pop(handle.replica_id, None)
        if r is None:
            return
        drain_s = r.drain_timeout_s
        if self._check(r):
            call = r.actor.stop.remote(drain_s)
            try:
                await asyncio.wait_for(asyncio.wrap_future(call.future()), drain_s + STOP_MARGIN_S)
            except Exception as exc:  # dead meanwhile, or stuck: the kill below settles it
                log.warning("replica %s did not stop cleanly: %s", handle.replica_id, exc)
        with contextlib.suppress(Exception):
            self._ray.kill(r.actor, no_restart=True)

    async def close(self) -> None:
        """Stop every replica this backend started, then leave the cluster (and stop the
        single-node Ray if this backend started it). Idempotent: a fleet may share one backend
        between deployments and close it once per deployment."""
        if self._closed or self._ray is None:
            self._closed = True
            return
        self._closed = True
        await asyncio.gather(*(self.stop(r.handle) for r in list(self.replicas.values())))
        if self._owns_ray:
            await asyncio.to_thread(self._ray.shutdown)
