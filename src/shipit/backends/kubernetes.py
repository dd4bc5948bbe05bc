"""``KubernetesBackend``: replicas as pods, over the Kubernetes API (the ``lightkube`` client).

``start`` creates one pod per replica (``backends.k8s_pods``: labels deployment, version, pool,
managed-by shipit; GPU requests; the pool's node selector and tolerations) and returns handles
whose URL is the pod's DNS name through a headless Service, so it is known before the pod is
scheduled. ``stop`` deletes the pod with a grace period above the drain timeout. One watch on
the managed pods keeps every replica's ``PodView`` (state, failure) and its last pod; when
a ``Registrar`` is bound for the deployment the states go there too. A pod that fails
(OOMKilled, Evicted, a container error, a controller's DisruptionTarget) or disappears without
being asked is no longer ``alive``: the lifecycle policy reaps it and the autoscaler starts a
replacement. A ready pod whose Ready condition turns False is checked against its node: a node
that is NotReady, unreachable or gone is a lost node, and the pod a ``NodeLost`` failure (a pod
that is only not ready, e.g. draining, stays). ``cold_start_phases`` reads the pod's conditions
and Events (``backends.k8s_phases``) for the gateway's cold-start metric.

API failures, as a Kubernetes client must handle them: the watch restarts from the last
resourceVersion it saw; 410 Gone relists (and reconciles: a pod missing from the list is gone);
409 Conflict on a node update is re-read and retried; an unreachable API server is retried with
exponential back-off while every known replica stays tracked (and keeps serving).

Node health: each failure on a node feeds ``policy.node_health``; the backend applies its
decision: cordon (``spec.unschedulable: true``, with the read resourceVersion), an Event on the
node, the ``shipit_node_cordons_total`` metric (of the registry bound with ``bind_metrics``:
the gateway's, under ``shipit up``). The failed pod's replacement is then scheduled
elsewhere. It decides nothing else and never imports the router or the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.client import FieldSelector, LabelSelector
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node, Pod
from lightkube.types import PatchType

from shipit.backends.base import Registrar, ReplicaHandle, ReplicaSpec
from shipit.backends.k8s_phases import pod_phases
from shipit.backends.k8s_pods import (
    DEPLOYMENT,
    MANAGED_BY,
    OWNER,
    PodView,
    pod_name,
    read_pod,
    replica_pod,
    replica_url,
)
from shipit.config.k8s_backend import KubernetesBackendConfig
from shipit.core.fleet import ReplicaState
from shipit.policy import node_health as nh
from shipit.telemetry.instruments import ControlPlaneMetrics

log = logging.getLogger("shipit.backends.kubernetes")
T = TypeVar("T")


Phases = tuple[tuple[str, float], ...]
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


@dataclass
class _Replica:
    handle: ReplicaHandle
    view: PodView | None = None
    pod: Pod | None = None  # as last seen
    phases: Phases | None = None  # once ready: its cold start no longer changes
    deleting: bool = False
    gone: bool = False  # failed, or deleted by someone else
    counted: bool = False  # its failure went to the node health policy


class KubernetesBackend:
    kind = "kubernetes"  # the ``backend`` of its replicas' records

    def __init__(
        self,
        cfg: KubernetesBackendConfig,
        *,
        deployment: str | None = None,
        registrars: Mapping[str, Registrar] | None = None,
        metrics: ControlPlaneMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        api_attempts: int = 8,
    ) -> None:
        self.cfg = cfg
        # Only this deployment's pods (when given), else every pod shipit manages here.
        self.selector: LabelSelector = {MANAGED_BY: "shipit", OWNER: "gateway"}
        if deployment:
            self.selector[DEPLOYMENT] = deployment
        self.registrars = dict(registrars or {})
        self.clock = clock
        self.backoff_s = backoff_s
        self.api_attempts = api_attempts
        self.replicas: dict[str, _Replica] = {}
        self.keeps_replicas_on_exit = cfg.keep_replicas_on_exit
        self.connected = False
        self.relists = 0
        self.conflicts_retried = 0
        self.cordoned: list[str] = []
        self.node_decisions: list[nh.NodeHealthDecision] = []
        self._health_cfg = nh.NodeHealthConfig(**cfg.node_health.model_dump())
        self._health_state = nh.NodeHealthState()
        self._failures: list[nh.NodeFailure] = []
        self._client: AsyncClient | None = None
        self._watch: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._salt = secrets.token_hex(4)
        self._seq = 0
        self._deployment = deployment or ""
        self._cordons = metrics.node_cordons if metrics is not None else None
        self._suspects: set[str] = set()  # were ready, are not: is their node lost?
        self._nodes_forbidden = False

    def bind_metrics(self, metrics: ControlPlaneMetrics) -> None:
        """Count cordons in these metrics (the gateway's registry, served at ``/metrics``)."""
        self._cordons = metrics.node_cordons

    # ----- connection and discovery -------------------------------------------------------
    def _make_client(self) -> AsyncClient:
        path = self.cfg.kubeconfig
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        return AsyncClient(config, namespace=self.cfg.namespace, field_manager="shipit")

    async def connect(self) -> None:
        """Start watching the managed pods (after one list); idempotent."""
        if self._client is None:
            self._client = self._make_client()
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="k8s-pod-watch")
        await self._synced.wait()

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("KubernetesBackend used before connect()")
        return self._client

    async def discover(self, deployment: str | None = None) -> list[ReplicaHandle]:
        """Replicas already running under shipit's labels (a restarted gateway adopts them)."""
        await self.connect()
        return [
            r.handle
            for r in self.replicas.values()
            if not r.gone and (deployment is None or r.handle.deployment == deployment)
        ]

    # ----- the ReplicaBackend protocol ---------------------------------------------------
    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        await self.connect()
        handles = []
        for _ in range(count):
            self._seq += 1
            version = spec.version or self.cfg.version
            name = pod_name(spec.deployment, version, self._seq, self._salt)
            handle = ReplicaHandle(name, replica_url(name, self.cfg), spec.deployment)
            self.replicas[name] = _Replica(handle)
            pod = replica_pod(spec, self.cfg, name)
            try:
                await self._api(partial(self.client.create, pod))
            except ApiError as exc:
                if exc.status.code != 409:  # 409: an earlier attempt did create it
                    self.replicas.pop(name, None)
                    raise
            handles.append(handle)
        return handles

    async def stop(self, handle: ReplicaHandle) -> None:
        r = self.replicas.get(handle.replica_id)
        if r is not None:
            r.deleting = True
        try:  # the pod's own grace period (drain timeout + a margin) applies
            await self._api(lambda: self.client.delete(Pod, handle.replica_id))
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        self.replicas.pop(handle.replica_id, None)

    def list(self) -> list[ReplicaHandle]:
        return [r.handle for r in self.replicas.values() if not r.gone]

    def alive(self, handle: ReplicaHandle) -> bool:
        r = self.replicas.get(handle.replica_id)
        return r is not None and not r.gone

    def state(self, replica_id: str) -> ReplicaState | None:
        r = self.replicas.get(replica_id)
        if r is None:
            return None
        return r.view.state if r.view is not None else ReplicaState.STARTING

    def version(self, replica_id: str) -> str | None:
        """The version label of the replica's pod (as last seen by the watch)."""
        r = self.replicas.get(replica_id)
        return r.view.version if r is not None and r.view is not None else None

    def failure(self, replica_id: str) -> str | None:
        r = self.replicas.get(replica_id)
        return r.view.failure if r is not None and r.view is not None else None

    async def cold_start_phases(self, replica_id: str) -> Phases:
        """The pod's part of its cold start, from its conditions and Events: ``schedule``
        (created to bound), ``pull`` (to image pulled), ``container_start`` (to running).
        Without permission to list Events, what the pod alone says."""
        r = self.replicas.get(replica_id)
        if r is None or r.pod is None:
            return ()
        if r.phases is not None:
            return r.phases
        events: list[Event] = []
        if self._client is not None:
            fields: FieldSelector = {
                "involvedObject.kind": "Pod",
                "involvedObject.name": replica_id,
            }
            try:
                it = self.client.list(Event, namespace=self.cfg.namespace, fields=fields)
                events = [e async for e in it]
            except Exception as exc:  # e.g. no RBAC on events: the pod's own marks remain
                log.info("could not read the Events of pod %s (%s)", replica_id, exc)
        phases = pod_phases(r.pod, events)
        if r.view is not None and r.view.ready:
            r.phases = phases
        return phases

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ----- API calls: back off while unreachable ------------------------------------------
    async def _sleep_backoff(self, attempt: int) -> None:
        base, top = self.backoff_s
        await asyncio.sleep(min(base * 2**attempt, top))

    async def _api(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self.api_attempts):
            try:
                result = await call()
                self.connected = True
                return result
            except httpx2.HTTPStatusError:  # an answer (ApiError is one), not an outage
                raise
            except Exception as exc:  # transport: refused, reset, timed out
                self.connected = False
                if attempt == self.api_attempts - 1:
                    raise
                log.warning("Kubernetes API unreachable (%s); retrying", exc)
                await self._sleep_backoff(attempt)
        raise AssertionError("unreachable")

    # ----- the watch ---------------------------------------------------------------------
    async def _relist(self) -> str:
        it = self.client.list(Pod, namespace=self.cfg.namespace, labels=self.selector)
        seen = {}
        async for pod in it:
            view = read_pod(pod)
            seen[view.name] = pod
        for name, pod in seen.items():
            self._apply("ADDED" if name not in self.replicas else "MODIFIED", pod)
        for name, r in list(self.replicas.items()):
            if name not in seen and r.view is not None:  # deleted while we were not watching
                self._gone(name, r)
        self.connected = True
        self._synced.set()
        return it.resourceVersion

    async def _watch_loop(self) -> None:
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                async for kind, pod in self.client.watch(
                    Pod,
                    namespace=self.cfg.namespace,
                    labels=self.selector,
                    resource_version=rv,
                ):
                    failures = 0
                    self.connected = True
                    if pod.metadata is not None and pod.metadata.resourceVersion:
                        rv = pod.metadata.resourceVersion
                    self._apply(kind, pod)
                    try:
                        await self._check_lost_nodes()
                        await self._node_health()
                    except Exception as exc:  # e.g. no RBAC on nodes: the watch goes on
                        log.warning("node health check failed (%s); will retry", exc)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status.code == 410:  # our resourceVersion is too old: list again
                    log.info("pod watch expired (410 Gone); relisting")
                    self.relists += 1
                    rv = None
                    continue
                log.warning("pod watch failed: %s", exc)
                await self._sleep_backoff(failures)
                failures += 1
            except Exception as exc:  # unreachable: keep every replica, retry from rv
                self.connected = False
                log.warning("Kubernetes API unreachable (%s); watch resumes from %s", exc, rv)
                await self._sleep_backoff(failures)
                failures += 1

    def _apply(self, kind: str, pod: Pod) -> None:
        view = read_pod(pod)
        r = self.replicas.get(view.name)
        if r is None:
            if kind == "DELETED" or view.failure is not None:
                return
            url = replica_url(view.name, self.cfg)
            r = _Replica(ReplicaHandle(view.name, url, view.deployment))
            self.replicas[view.name] = r  # adopted: started by an earlier gateway
        if kind == "DELETED":
            if r.deleting:
                self.replicas.pop(view.name, None)
            else:
                self._gone(view.name, r, view)
            return
        before = r.view.state if r.view is not None else None
        r.view, r.pod = view, pod
        if view.failure is not None and not r.deleting:
            self._gone(view.name, r, view)
        elif view.state is not before:
            if before is ReplicaState.READY and view.node and not r.deleting:
                self._suspects.add(view.name)
            self._report(r.handle, view.state)

    def _gone(self, name: str, r: _Replica, view: PodView | None = None) -> None:
        if r.gone:
            return
        r.gone = True
        last = view or r.view
        reason = (last.failure if last is not None else None) or "Deleted"
        node = last.node if last is not None else None
        log.warning("replica pod %s is gone (%s) on node %s", name, reason, node)
        self._report(r.handle, ReplicaState.UNHEALTHY)
        if node and not r.counted:
            r.counted = True
            hw = nh.hardware_looking(f"{reason} {last.message if last else ''}")
            self._failures.append(nh.NodeFailure(node, name, self.clock(), reason, hw))

    def _report(self, handle: ReplicaHandle, state: ReplicaState) -> None:
        registrar = self.registrars.get(handle.deployment)
        if registrar is not None:
            registrar.set_state(handle.replica_id, state)

    # ----- node health -------------------------------------------------------------------
    async def _check_lost_nodes(self) -> None:
        """Pods that were ready and are not: a failure if their node is lost."""
        suspects, self._suspects = self._suspects, set()
        for name in sorted(suspects):
            r = self.replicas.get(name)
            view = r.view if r is not None else None
            if r is None or view is None or r.gone or r.deleting or view.ready or not view.node:
                continue
            why = await self._node_lost(view.node)
            if why is not None:
                r.view = dataclasses.replace(
                    view, state=ReplicaState.UNHEALTHY, failure="NodeLost", message=why
                )
                self._gone(name, r)

    async def _node_lost(self, node: str) -> str | None:
        """Why ``node`` counts as lost (NotReady, unreachable, deleted); ``None`` if it does not
        or cannot be read (no RBAC on nodes: the taint manager's eviction is seen later)."""
        if self._nodes_forbidden:
            return None
        try:
            found = await self._api(lambda: self.client.get(Node, node))
        except ApiError as exc:
            if exc.status.code == 404:
                return f"node {node} no longer exists"
            if exc.status.code == 403:
                self._nodes_forbidden = True
            log.warning("cannot read node %s (%s): a lost node is seen later", node, exc)
            return None
        taints = (found.spec.taints if found.spec else None) or []
        if any(t.key == UNREACHABLE_TAINT for t in taints):
            return f"node {node} is unreachable"
        conds = (found.status.conditions if found.status else None) or []
        ready = [c for c in conds if c.type == "Ready"]
        if ready and ready[0].status != "True":
            return f"node {node} is not ready (Ready={ready[0].status}: {ready[0].reason or ''})"
        return None

    async def _node_health(self) -> None:
        if not self._failures:
            return
        nodes = [n async for n in self.client.list(Node)]
        failures, self._failures = tuple(self._failures), []
        names = tuple(n.metadata.name for n in nodes if n.metadata and n.metadata.name)
        cordoned = frozenset(
            n.metadata.name
            for n in nodes
            if n.metadata and n.metadata.name and n.spec and n.spec.unschedulable
        )
        snap = nh.NodeHealthSnapshot(self.clock(), names, cordoned, failures)
        decision, self._health_state = nh.decide(self._health_cfg, snap, self._health_state)
        self.node_decisions.append(decision)
        for c in decision.cordon:
            if self.cfg.cordon_nodes:
                await self.cordon(c.node, c.reason_code, c.reason)
            else:  # not allowed to (no RBAC on nodes): say what it would have done
                log.warning("would cordon node %s (cordon_nodes is off): %s", c.node, c.reason)

    async def cordon(self, node: str, reason_code: str, reason: str) -> None:
        """``spec.unschedulable: true`` on the node, guarded by the resourceVersion just read
        (409: re-read and retry), then an Event on the node and the metric."""
        for _ in range(5):
            current = await self._api(lambda: self.client.get(Node, node))
            assert current.metadata is not None
            patch: dict[str, Any] = {
                "metadata": {"resourceVersion": current.metadata.resourceVersion},
                "spec": {"unschedulable": True},
            }
            try:
                merge = PatchType.MERGE
                await self._api(partial(self.client.patch, Node, node, patch, patch_type=merge))
                break
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
                self.conflicts_retried += 1
                log.info("node %s changed under us (409); re-reading", node)
        else:
            log.error("could not cordon node %s: kept conflicting", node)
            return
        self.cordoned.append(node)
        if self._cordons is not None:
            self._cordons.labels(deployment=self._deployment, reason=reason_code).inc()
        log.warning("cordoned node %s: %s", node, reason)
        event = Event(
            metadata=ObjectMeta(generateName=f"{node}.shipit-", namespace=self.cfg.namespace),
            involvedObject=ObjectReference(kind="Node", name=node, apiVersion="v1"),
            reason="ShipitCordoned",
            message=reason[:1000],
            type="Warning",
            source=EventSource(component="shipit"),
        )
        try:
            await self._api(lambda: self.client.create(event))
        except ApiError as exc:  # the cordon stands; the Event is a courtesy
            log.warning("could not record the cordon Event for %s: %s", node, exc)
