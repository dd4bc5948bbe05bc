"""``Fleet``: starts each deployment's replicas on its backends and reports them to the
deployment's ``Registrar`` (the replica registry); on shutdown marks them draining and stops
them. It is also the autoscaler's ``ReplicaPool``: start more local replicas, stop one (drain,
exit, unregister), say which it manages and whether each is still alive.

Owns the mapping from backend handles to registrations, so the gateway (which must not import
backends) gets start/stop hooks and nothing else. Local replicas come in as ``starting`` (the
health monitor flips them to ``ready`` on ``/health``), so requests that arrive during a cold
start wait in the queue instead of failing. It only starts, stops and probes replicas: it
decides nothing and must not import the router.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from shipit.backends.base import Registrar, ReplicaBackend, ReplicaHandle, ReplicaSpec
from shipit.config.gateway import DeploymentConfig
from shipit.config.rollout import VersionConfig
from shipit.core.fleet import ReplicaState
from shipit.core.urls import redact_url

log = logging.getLogger("shipit.gateway.fleet")


def lora_loading_args(d: DeploymentConfig) -> tuple[str, ...]:
    """Replica flags that let the gateway load the deployment's configured adapters (LoRA
    affinity) at run time, from exactly those directories and nowhere else."""
    adapters = d.routing.lora_affinity.adapters
    if not adapters:
        return ()
    out = ["--enable-lora-loading"]
    for path in sorted(set(adapters.values())):
        out += ["--lora-root", path]
    return tuple(out)


class Fleet:
    def __init__(
        self,
        deployments: Iterable[DeploymentConfig],
        registrars: Mapping[str, Registrar],
        *,
        local: ReplicaBackend,
        external: ReplicaBackend,
        backends: Mapping[str, ReplicaBackend] | None = None,
    ) -> None:
        self.deployments = {d.name: d for d in deployments}
        missing = set(self.deployments) - set(registrars)
        if missing:
            raise ValueError(f"no registrar for deployment(s) {sorted(missing)}")
        self.registrars = registrars
        self.local = local
        self.external = external
        # Per deployment, where its replicas start instead of ``local`` (e.g. Kubernetes pods).
        self.backends = dict(backends or {})
        self.handles: list[tuple[ReplicaBackend, ReplicaHandle]] = []
        # The version each replica runs (None: the deployment's first) and each deployment's
        # current one: the autoscaler manages only the current version's replicas, so a
        # rollout's candidate (or the old version being drained) is never scaled away.
        self.current: dict[str, str | None] = {}
        self._versions: dict[str, str | None] = {}
        self._stopping: set[str] = set()

    @staticmethod
    def spec(d: DeploymentConfig) -> ReplicaSpec:
        return ReplicaSpec(
            d.name,
            d.model,
            simulate=d.simulate,
            extra_args=tuple(d.replica_args)
            + (("--served-model-name", d.served_model_name) if d.served_model_name else ())
            + lora_loading_args(d),
            drain_timeout_s=d.drain_timeout_s,
        )

    def _register(
        self, backend: ReplicaBackend, h: ReplicaHandle, version: str | None = None
    ) -> None:
        self.handles.append((backend, h))
        self._versions[h.replica_id] = version or self.current.get(h.deployment)
        registrar = self.registrars[h.deployment]
        # A backend that watches its replicas (Kubernetes) may know more than "starting":
        # an adopted pod is ready, and a fast one may be ready before it is registered.
        watched = getattr(backend, "state", None)
        state = watched(h.replica_id) if watched is not None else None
        extra: dict[str, Any] = {}
        if isinstance(state, ReplicaState):
            extra["state"] = state
        kind = getattr(backend, "kind", None)  # "kubernetes"; absent: local or external
        if kind is not None:
            extra["backend"] = kind
        registrar.add(h.replica_id, h.url, external=h.external, version=version, **extra)
        url = redact_url(h.url)
        log.info("replica %s of %s at %s (pid %s)", h.replica_id, h.deployment, url, h.pid)

    def version_name(self, deployment: str) -> str:
        """The label of what the deployment's own replicas run (pods carry it)."""
        return self.current.get(deployment) or self.deployments[deployment].rollout.version

    def _own_spec(self, d: DeploymentConfig) -> ReplicaSpec:
        return dataclasses.replace(self.spec(d), version=self.version_name(d.name))

    def backend_for(self, deployment: str) -> ReplicaBackend:
        """Where ``deployment``'s replicas start: its own backend, else the local one."""
        return self.backends.get(deployment, self.local)

    async def start(self) -> None:
        for d in self.deployments.values():
            spec = self._own_spec(d)
            own = self.backend_for(d.name)
            adopted = 0
            discover = getattr(own, "discover", None)
            labelled = getattr(own, "version", None)
            if discover is not None:  # replicas a previous gateway left running
                for h in await discover(d.name):
                    # A rollout's candidate (a restart mid-rollout) stays that version; the
                    # rollout controller finds its replicas instead of starting new ones.
                    version = labelled(h.replica_id) if labelled is not None else None
                    mine = version is None or version == self.version_name(d.name)
                    self._register(own, h, None if mine else version)
                    adopted += mine
            wanted = max(d.initial_replicas - adopted, 0)
            counts = ((self.external, len(d.replica_urls)), (own, wanted))
            for backend, count in counts:
                if count == 0:
                    continue
                for h in await backend.start(spec, count):
                    self._register(backend, h)

    # ----- the autoscaler's ReplicaPool (services.autoscaler) --------------------------------
    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        backend = self.backend_for(deployment)
        handles = await backend.start(self._own_spec(self.deployments[deployment]), count)
        for h in handles:
            self._register(backend, h)
        return [h.replica_id for h in handles]

    # ----- the rollout controller's VersionPool (services.rollouts) --------------------------
    @staticmethod
    def version_of(d: DeploymentConfig, version: VersionConfig) -> DeploymentConfig:
        """The deployment as ``version`` runs it: its model, accelerator and replica flags."""
        changes: dict[str, object] = {}
        if version.model is not None:
            changes["model"] = version.model
            if d.served_model_name is None:
                # Clients keep sending the deployment's model name to the new version.
                changes["served_model_name"] = d.model_name
        if version.simulate is not None:
            changes["simulate"] = version.simulate
        if version.replica_args is not None:
            changes["replica_args"] = list(version.replica_args)
        return d.model_copy(update=changes)

    async def start_version(self, deployment: str, version: VersionConfig) -> list[str]:
        """Replicas of ``version`` up to ``version.replicas``: those of it already here (pods a
        previous gateway started and this one adopted) count, the rest are started."""
        d = self.version_of(self.deployments[deployment], version)
        backend = self.backend_for(deployment)
        have = [
            h.replica_id
            for b, h in self.handles
            if h.deployment == deployment
            and self._versions.get(h.replica_id) == version.name
            and h.replica_id not in self._stopping
            and b.alive(h)
        ]
        spec = dataclasses.replace(self.spec(d), version=version.name)
        handles = await backend.start(spec, max((version.replicas or 1) - len(have), 0))
        for h in handles:
            self._register(backend, h, version.name)
        return have + [h.replica_id for h in handles]

    def adopt_version(self, deployment: str, version: VersionConfig) -> None:
        self.deployments[deployment] = self.version_of(self.deployments[deployment], version)
        self.current[deployment] = version.name

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        """Drain and stop one replica (the backend waits for it to exit), then unregister it."""
        found = [(b, h) for b, h in self.handles if h.replica_id == replica_id]
        self._stopping.add(replica_id)
        registrar = self.registrars.get(deployment)
        if registrar is not None:
            registrar.set_state(replica_id, ReplicaState.DRAINING)
        for backend, handle in found:
            await backend.stop(handle)
            if (backend, handle) in self.handles:  # ``stop`` may have cleared the list meanwhile
                self.handles.remove((backend, handle))
        if registrar is not None:
            registrar.remove(replica_id)

    async def kill_replica(self, deployment: str, replica_id: str) -> bool:
        """End one replica at once, as a GPU falling off the bus would: SIGKILL, no drain, and
        it stays registered (the caller detects the death and stops it). True when it was
        killed; False when its backend cannot kill (it is stopped instead: drained, then
        exited, and unregistered)."""
        found = [(b, h) for b, h in self.handles if h.replica_id == replica_id]
        if not found:
            raise KeyError(f"{deployment}: no replica {replica_id!r} here")
        if not all(callable(getattr(b, "kill", None)) for b, _ in found):
            await self.stop_replica(deployment, replica_id)
            return False
        for backend, handle in found:
            await backend.kill(handle)  # type: ignore[attr-defined]
        return True

    def pid(self, replica_id: str) -> int | None:
        """The replica's process id where it runs here (a local process), else None."""
        return next((h.pid for _, h in self.handles if h.replica_id == replica_id), None)

    def managed(self, deployment: str) -> list[str]:
        return [
            h.replica_id
            for b, h in self.handles
            if b is self.backend_for(deployment)
            and h.deployment == deployment
            and not h.external
            and self._versions.get(h.replica_id) == self.current.get(deployment)
        ]

    async def cold_start_phases(
        self, deployment: str, replica_id: str
    ) -> tuple[tuple[str, float], ...]:
        """The phases before the replica's process ran, where its backend knows them (a
        Kubernetes pod's schedule, image pull, container start); ``()`` otherwise."""
        for b, h in self.handles:
            phases = getattr(b, "cold_start_phases", None)
            if h.replica_id == replica_id and phases is not None:
                found: tuple[tuple[str, float], ...] = await phases(replica_id)
                return found
        return ()

    def alive(self, deployment: str, replica_id: str) -> bool:
        return any(b.alive(h) for b, h in self.handles if h.replica_id == replica_id)

    def dead(self) -> list[ReplicaHandle]:
        """Replicas whose process has gone (the monitor also sees them fail health checks)."""
        return [h for b, h in self.handles if not b.alive(h)]

    async def stop(self) -> None:
        """Drain and stop every replica, except those of a backend that keeps its replicas
        when the gateway exits (Kubernetes pods: the next gateway adopts them)."""
        ours = [(b, h) for b, h in self.handles if not getattr(b, "keeps_replicas_on_exit", False)]
        for _, h in ours:
            self._set_state(h, ReplicaState.DRAINING)
        await asyncio.gather(*(b.stop(h) for b, h in ours), return_exceptions=True)
        for _, h in ours:
            self._set_state(h, ReplicaState.STOPPED)
        self.handles.clear()
        await asyncio.gather(*(b.close() for b in self.backends.values()), return_exceptions=True)

    def _set_state(self, h: ReplicaHandle, state: ReplicaState) -> None:
        registrar = self.registrars.get(h.deployment)
        if registrar is not None:
            registrar.set_state(h.replica_id, state)
