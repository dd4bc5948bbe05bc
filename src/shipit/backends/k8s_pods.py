"""Replica pods: the pod a ``ReplicaSpec`` becomes, and what a pod's status says about it.

``replica_pod`` builds the pod (labels ``app.kubernetes.io/managed-by: shipit`` plus
deployment, version and pool; the engine's server: ``shipit replica`` and its flags, or vLLM's
or SGLang's own server for those engines; GPU requests; the pool's
node selector and tolerations; probes on ``/health``; a grace period above the drain timeout;
``restartPolicy: Never``, so a crash is seen and handled by shipit's lifecycle policy rather
than restarted in place). ``read_pod`` turns a pod into a ``PodView``: its replica state, the
cold-start milestones it has passed, and, if it failed, why (OOMKilled, Evicted, NodeLost, a
container error and its message, a controller's DisruptionTarget such as the taint manager's
on an unreachable node, or a deletion nobody here asked for). No I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lightkube.models.core_v1 import (
    Capabilities,
    Container,
    ContainerPort,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    HTTPGetAction,
    PodSpec,
    Probe,
    ResourceRequirements,
    SecretKeySelector,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from shipit.backends.base import ReplicaSpec
from shipit.config.gateway import DeploymentConfig, ShipitConfig
from shipit.config.k8s_backend import KubernetesBackendConfig
from shipit.core.fleet import ReplicaState
from shipit.core.replica_admin import ADMIN_TOKEN_ENV
from shipit.deploy.k8s_pods import gpu_engine_command

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
# Pods this backend creates say owner=gateway; the rendered workloads' pods say owner=workload,
# so neither side ever adopts or deletes the other's.
OWNER = "shipit.dev/owner"
DEPLOYMENT = "shipit.dev/deployment"
VERSION = "shipit.dev/version"
POOL = "shipit.dev/pool"
KILL_GRACE_S = 5


def labels(deployment: str, version: str, pool: str) -> dict[str, str]:
    return {
        MANAGED_BY: "shipit",
        COMPONENT: "replica",
        OWNER: "gateway",
        DEPLOYMENT: deployment,
        VERSION: version,
        POOL: pool,
    }


def settings_for(cfg: ShipitConfig, d: DeploymentConfig) -> KubernetesBackendConfig:
    """``d``'s backend settings: its ``kubernetes_backend:`` block, with what it leaves unset
    taken from the top-level ``kubernetes:`` section (namespace, the engine's image, GPUs,
    and the first placement's version and node pool: selector, tolerations, capacity)."""
    own = d.kubernetes_backend
    k = cfg.kubernetes
    placement = k.deployments.get(d.name)
    first = placement.placements[0] if placement is not None else None
    pools = {p.name: p for p in k.node_pools}
    pool = pools.get(first.pool) if first is not None else None
    derived: dict[str, object] = {
        "namespace": k.namespace,
        "image": k.images.ref(placement.engine if placement is not None else "embedded"),
        "engine": placement.engine if placement is not None else "embedded",
        "engine_args": list(placement.engine_args) if placement is not None else [],
        "gpus": placement.gpus if placement is not None else 0,
        "version": first.version if first is not None else "v1",
        "cordon_nodes": k.cordon_nodes,
    }
    if pool is not None:
        derived |= {
            "pool": pool.capacity,
            "node_selector": dict(pool.node_selector),
            "tolerations": list(pool.tolerations),
        }
    update = {f: v for f, v in derived.items() if f not in own.model_fields_set}
    return own.model_copy(update=update)


def pod_name(deployment: str, version: str, seq: int, salt: str) -> str:
    """``<deployment>-<version>-<6 hex>``: unique across gateway restarts (``salt``)."""
    digest = hashlib.sha256(f"{salt}/{seq}".encode()).hexdigest()[:6]
    return f"{deployment}-{version}-{digest}".lower()[:63]


def replica_url(name: str, cfg: KubernetesBackendConfig) -> str:
    """The pod's stable DNS name through the headless Service (hostname + subdomain)."""
    return f"http://{name}.{cfg.service}.{cfg.namespace}.svc:{cfg.port}"


def served_name(spec: ReplicaSpec) -> str:
    """The model name clients send: ``--served-model-name`` among the flags, else the model."""
    args = list(spec.extra_args)
    for i, arg in enumerate(args[:-1]):
        if arg == "--served-model-name":
            return args[i + 1]
    return spec.model


def command_line(spec: ReplicaSpec, cfg: KubernetesBackendConfig) -> tuple[list[str], list[str]]:
    """(command, args). The embedded engine: ``shipit replica`` with the deployment's replica
    flags. vLLM and SGLang: the engine's own server (``deploy.k8s_pods.gpu_engine_command``,
    as the rendered workloads run it) with the served model name, tensor parallelism over the
    pod's GPUs and the ``kubernetes:`` section's ``engine_args``; shipit's replica flags
    (``--simulate``, ``--drain-timeout-s``, LoRA loading) mean nothing to them and are not
    passed."""
    if cfg.engine != "embedded":
        return gpu_engine_command(
            cfg.engine,
            model=spec.model,
            served_name=served_name(spec),
            port=cfg.port,
            gpus=max(cfg.gpus, 1),
            engine_args=list(cfg.engine_args),
        )
    args = ["--model", spec.model, "--host", "0.0.0.0", "--port", str(cfg.port)]
    args += ["--drain-timeout-s", f"{spec.drain_timeout_s:g}"]
    if spec.simulate:
        args += ["--simulate", spec.simulate]
    return list(cfg.command), args + list(spec.extra_args)


def replica_pod(spec: ReplicaSpec, cfg: KubernetesBackendConfig, name: str) -> Pod:
    command, args = command_line(spec, cfg)
    env = [EnvVar(name=k, value=v) for k, v in spec.env]
    if cfg.admin_token_secret:
        ref = SecretKeySelector(name=cfg.admin_token_secret, key="token")
        env.append(EnvVar(name=ADMIN_TOKEN_ENV, valueFrom=EnvVarSource(secretKeyRef=ref)))
    gpus = {"nvidia.com/gpu": str(cfg.gpus)} if cfg.gpus else None
    health = HTTPGetAction(path="/health", port=cfg.port)
    container = Container(
        name="replica",
        image=cfg.image,
        command=command,
        args=args,
        env=env or None,
        ports=[ContainerPort(containerPort=cfg.port, name="http")],
        resources=ResourceRequirements(limits=gpus, requests=gpus),
        # The model loads before /health answers: a start budget, then tight readiness.
        startupProbe=Probe(httpGet=health, periodSeconds=5, failureThreshold=120),
        readinessProbe=Probe(httpGet=health, periodSeconds=2, failureThreshold=3),
        securityContext=SecurityContext(
            runAsNonRoot=True,
            allowPrivilegeEscalation=False,
            capabilities=Capabilities(drop=["ALL"]),
        ),
    )
    volumes = None
    if cfg.engine != "embedded":
        # Tensor-parallel workers share tensors through /dev/shm (the runtime gives 64 MiB).
        shm = EmptyDirVolumeSource(medium="Memory", sizeLimit="16Gi")
        volumes = [Volume(name="dshm", emptyDir=shm)]
        container.volumeMounts = [VolumeMount(name="dshm", mountPath="/dev/shm")]
    tolerations = [
        Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
        for t in cfg.tolerations
    ]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=cfg.namespace,
            labels=labels(spec.deployment, spec.version or cfg.version, cfg.pool),
        ),
        spec=PodSpec(
            containers=[container],
            restartPolicy="Never",
            hostname=name,
            subdomain=cfg.service,
            nodeSelector=dict(cfg.node_selector) or None,
            tolerations=tolerations or None,
            volumes=volumes,
            terminationGracePeriodSeconds=int(spec.drain_timeout_s) + KILL_GRACE_S,
        ),
    )


@dataclass(frozen=True, slots=True)
class PodView:
    name: str
    deployment: str
    version: str | None  # the version label: what the pod runs
    node: str | None
    state: ReplicaState
    scheduled: bool
    started: bool  # image pulled, container running
    ready: bool
    failure: str | None  # reason code when the pod failed: OOMKilled, Evicted, NodeLost ...
    message: str  # the termination message, for XID-like errors


def _condition(pod: Pod, kind: str) -> bool:
    conds = (pod.status.conditions if pod.status else None) or []
    return any(c.type == kind and c.status == "True" for c in conds)


def _failure(pod: Pod) -> tuple[str, str] | None:
    st = pod.status
    if st is not None:
        if st.reason in ("Evicted", "NodeLost", "Preempted", "Shutdown", "Terminated"):
            return st.reason, st.message or ""
        for cs in st.containerStatuses or []:
            term = cs.state.terminated if cs.state else None
            if term is not None:
                return term.reason or "Error", term.message or ""
        if st.phase in ("Failed", "Succeeded", "Unknown"):
            return st.phase, st.message or ""
        # A controller is taking it away: the taint manager (its node is unreachable),
        # preemption, the eviction API, pod garbage collection.
        for c in st.conditions or []:
            if c.type == "DisruptionTarget" and c.status == "True":
                return c.reason or "DisruptionTarget", c.message or ""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return "Terminating", "deleted by another client"
    return None


def read_pod(pod: Pod) -> PodView:
    meta = pod.metadata
    assert meta is not None and meta.name is not None
    failed = _failure(pod)
    statuses = (pod.status.containerStatuses if pod.status else None) or []
    started = any(cs.state is not None and cs.state.running is not None for cs in statuses)
    ready = failed is None and _condition(pod, "Ready")
    if failed is not None:
        state = ReplicaState.UNHEALTHY
    elif ready:
        state = ReplicaState.READY
    else:
        state = ReplicaState.STARTING
    return PodView(
        name=meta.name,
        deployment=(meta.labels or {}).get(DEPLOYMENT, ""),
        version=(meta.labels or {}).get(VERSION),
        node=pod.spec.nodeName if pod.spec else None,
        state=state,
        scheduled=_condition(pod, "PodScheduled"),
        started=started,
        ready=ready,
        failure=failed[0] if failed else None,
        message=failed[1] if failed else "",
    )
