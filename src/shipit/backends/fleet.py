"""``Fleet``: starts each deployment's replicas on its backends and registers them with the
deployment's router; on shutdown marks them draining and stops them. It is also the
autoscaler's ``ReplicaPool``: start more local replicas, stop one (drain, exit, unregister).

Owns the mapping from backend handles to router registrations, so the gateway (which must not
import backends) gets start/stop hooks and nothing else. Local replicas come in as
``starting`` (the monitor flips them to ``ready`` on ``/health``), so requests that arrive
during a cold start wait in the queue instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from shipit.backends.base import ReplicaBackend, ReplicaHandle, ReplicaSpec
from shipit.config.gateway import DeploymentConfig
from shipit.core.fleet import ReplicaState
from shipit.services.router import RouterService

log = logging.getLogger("shipit.gateway.fleet")


class Fleet:
    def __init__(
        self,
        routers: Mapping[str, RouterService],
        *,
        local: ReplicaBackend,
        external: ReplicaBackend,
    ) -> None:
        self.routers = routers
        self.local = local
        self.external = external
        self.handles: list[tuple[ReplicaBackend, ReplicaHandle]] = []

    @staticmethod
    def spec(d: DeploymentConfig) -> ReplicaSpec:
        return ReplicaSpec(
            d.name,
            d.model,
            simulate=d.simulate,
            extra_args=tuple(d.replica_args)
            + (("--served-model-name", d.served_model_name) if d.served_model_name else ()),
            drain_timeout_s=d.drain_timeout_s,
        )

    async def start(self) -> None:
        for name, router in self.routers.items():
            d = router.deployment
            spec = self.spec(d)
            counts = ((self.external, len(d.replica_urls)), (self.local, d.initial_replicas))
            for backend, count in counts:
                if count == 0:
                    continue
                for h in await backend.start(spec, count):
                    self.handles.append((backend, h))
                    router.add_replica(h.replica_id, h.url, external=h.external)
                    log.info("replica %s of %s at %s (pid %s)", h.replica_id, name, h.url, h.pid)

    # ----- the autoscaler's ReplicaPool (services.autoscaler) --------------------------------
    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        router = self.routers[deployment]
        handles = await self.local.start(self.spec(router.deployment), count)
        for h in handles:
            self.handles.append((self.local, h))
            router.add_replica(h.replica_id, h.url)
            log.info("replica %s of %s at %s (pid %s)", h.replica_id, deployment, h.url, h.pid)
        return [h.replica_id for h in handles]

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        """Drain and stop one replica (the backend waits for it to exit), then unregister it."""
        found = [(b, h) for b, h in self.handles if h.replica_id == replica_id]
        router = self.routers.get(deployment)
        if router is not None:
            router.set_state(replica_id, ReplicaState.DRAINING)
        for backend, handle in found:
            await backend.stop(handle)
            if (backend, handle) in self.handles:  # ``stop`` may have cleared the list meanwhile
                self.handles.remove((backend, handle))
        if router is not None:
            router.remove_replica(replica_id)

    def managed(self, deployment: str) -> list[str]:
        return [
            h.replica_id
            for b, h in self.handles
            if b is self.local and h.deployment == deployment and not h.external
        ]

    def alive(self, deployment: str, replica_id: str) -> bool:
        return any(b.alive(h) for b, h in self.handles if h.replica_id == replica_id)

    def dead(self) -> list[ReplicaHandle]:
        """Replicas whose process has gone (the monitor also sees them fail health checks)."""
        return [h for b, h in self.handles if not b.alive(h)]

    async def stop(self) -> None:
        for _, h in self.handles:
            router = self.routers.get(h.deployment)
            if router is not None:
                router.set_state(h.replica_id, ReplicaState.DRAINING)
        await asyncio.gather(*(b.stop(h) for b, h in self.handles), return_exceptions=True)
        for _, h in self.handles:
            router = self.routers.get(h.deployment)
            if router is not None:
                router.set_state(h.replica_id, ReplicaState.STOPPED)
        self.handles.clear()
