"""Replica pod specs for ``shipit render k8s``: one workload per deployment x version x pool.

Owns what a replica pod is: the engine's command line, GPU requests (``nvidia.com/gpu``),
node placement from its pool (selector, tolerations, affinity), topology spread, the probes
that follow a replica's cold start (a startup probe long enough for process start, weights and
engine build; readiness on ``/health``; liveness on the listener, which stays open while the
replica drains), a grace period above the drain timeout, weights from a volume or an init
container (never from the image), and a locked-down security context. Pure: dicts out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shipit.config.gateway import DeploymentConfig, ShipitConfig
from shipit.config.kubernetes import PICKLE_SUFFIXES, K8sDeploymentConfig, NodePoolConfig
from shipit.deploy.images import RCLONE

Obj = dict[str, Any]
HTTP_PORT = 8000
REPLICA_SA = "shipit-replica"
GRACE_MARGIN_S = 15  # past the drain: the process's own exit and a late SIGTERM delivery
STARTUP_PERIOD_S = 5
RUN_AS = 10001
STATE_DIR = "/var/lib/shipit"
GPU = "nvidia.com/gpu"
# vLLM's and SGLang's flag for safetensors only: a pickle checkpoint is refused, never unpickled.
SAFETENSORS_ONLY = ("--load-format", "safetensors")
# Pods the rendered workloads own carry owner=workload in their selector, so pods the replica
# backend creates itself (owner=gateway) are never adopted or deleted by a ReplicaSet.
OWNER_LABEL = "shipit.dev/owner"


def common_labels() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "shipit", "app.kubernetes.io/managed-by": "shipit"}


def meta(name: str, namespace: str | None, labels: dict[str, str] | None = None) -> Obj:
    m: Obj = {"name": name, "labels": {**common_labels(), **(labels or {})}}
    if namespace is not None:
        m["namespace"] = namespace
    return m


@dataclass(frozen=True, slots=True)
class Workload:
    deployment: DeploymentConfig
    k8s: K8sDeploymentConfig
    pool: NodePoolConfig
    version: str
    replicas: int

    @property
    def name(self) -> str:
        return f"{self.deployment.name}-{self.version}-{self.pool.name}"


def deployment_selector(deployment: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": "replica", "shipit.dev/deployment": deployment}


def workload_labels(w: Workload) -> dict[str, str]:
    labels = {
        **deployment_selector(w.deployment.name),
        "app.kubernetes.io/name": "shipit-replica",
        "shipit.dev/version": w.version,
        "shipit.dev/pool": w.pool.name,
        "shipit.dev/capacity": w.pool.capacity,
        "shipit.dev/engine": w.k8s.engine,
    }
    if w.pool.gpu:
        labels["shipit.dev/gpu"] = w.pool.gpu
    return labels


def pod_security() -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(*, read_only_root: bool) -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def spread(selector: dict[str, str]) -> list[Obj]:
    """Across nodes, then zones; soft, so a small cluster still schedules everything."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def affinity(pool: NodePoolConfig) -> Obj | None:
    node: Obj = {}
    if pool.required_node_labels:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": k, "operator": "In", "values": v}
                        for k, v in pool.required_node_labels.items()
                    ]
                }
            ]
        }
    if pool.preferred_node_labels:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": 50,
                "preference": {"matchExpressions": [{"key": k, "operator": "In", "values": v}]},
            }
            for k, v in pool.preferred_node_labels.items()
        ]
    return {"nodeAffinity": node} if node else None


def model_arg(w: Workload) -> str:
    """What the engine loads: the mounted weights directory, else the deployment's model."""
    if w.k8s.weights.source != "none":
        return w.k8s.weights.mount_path
    return w.deployment.model


def gpu_engine_command(
    engine: str, *, model: str, served_name: str, port: int, gpus: int, engine_args: list[str]
) -> tuple[list[str], list[str]]:
    """(command, args) of vLLM's or SGLang's own OpenAI-compatible server: the model, the name
    clients send, the listener, tensor parallelism over the pod's GPUs, safetensors only."""
    listen = ["--served-model-name", served_name, "--host", "0.0.0.0", "--port", str(port)]
    if engine == "vllm":
        args = [model, *listen, "--tensor-parallel-size", str(gpus), *SAFETENSORS_ONLY]
        return ["vllm", "serve"], [*args, *engine_args]
    if engine == "sglang":
        args = ["--model-path", model, *listen, "--tp-size", str(gpus), *SAFETENSORS_ONLY]
        return ["python3", "-m", "sglang.launch_server"], [*args, *engine_args]
    raise ValueError(f"engine {engine!r} is not a GPU engine (vllm, sglang)")


def engine_command(w: Workload) -> tuple[list[str] | None, list[str]]:
    """(command, args): ``None`` keeps the image's entrypoint."""
    d, k = w.deployment, w.k8s
    name = d.model_name
    if k.engine == "embedded":
        args = ["replica", "--model", model_arg(w), "--served-model-name", name]
        args += ["--host", "0.0.0.0", "--port", str(HTTP_PORT)]
        args += ["--drain-timeout-s", f"{d.drain_timeout_s:g}"]
        if d.simulate:
            args += ["--simulate", d.simulate]
        return None, [*args, *d.replica_args, *k.engine_args]
    return gpu_engine_command(
        k.engine,
        model=model_arg(w),
        served_name=name,
        port=HTTP_PORT,
        gpus=k.gpus,
        engine_args=list(k.engine_args),
    )


def probes(d: DeploymentConfig) -> Obj:
    """Probes that follow the cold start: the startup probe covers process start, weights
    loaded and the engine built (``startup_timeout_s``); then readiness mirrors the gateway's
    own health check (interval and thresholds) and liveness only asks that the listener
    answers, since ``/health`` is 503 on purpose while the replica drains."""
    health = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "startupProbe": {
            **health,
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 3,
            "failureThreshold": max(1, math.ceil(d.startup_timeout_s / STARTUP_PERIOD_S)),
        },
        "readinessProbe": {
            **health,
            "periodSeconds": max(1, math.ceil(d.health_interval_s)),
            "timeoutSeconds": 2,
            "failureThreshold": d.health.unhealthy_threshold,
            "successThreshold": d.health.healthy_threshold,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
    }


def resources(k: K8sDeploymentConfig) -> Obj:
    r = k.resources
    requests: Obj = {"cpu": r.cpu, "memory": r.memory}
    limits: Obj = {"memory": r.memory_limit or r.memory}
    if r.cpu_limit:
        limits["cpu"] = r.cpu_limit
    if k.gpus:
        # An extended resource: the request must equal the limit.
        requests[GPU] = k.gpus
        limits[GPU] = k.gpus
    return {"requests": requests, "limits": limits}


def fetch_weights(w: Workload) -> Obj:
    """The init container that copies weights from object storage, refusing pickle files."""
    wc = w.k8s.weights
    refuse = " -o ".join(f"-name '*{s}'" for s in PICKLE_SUFFIXES)
    script = (
        f'rclone copy --fast-list "$WEIGHTS_URI" {wc.mount_path} && '
        f'if [ -n "$(find {wc.mount_path} {refuse})" ]; then '
        'echo "pickle checkpoints refused: convert them to safetensors" >&2; exit 1; fi'
    )
    container: Obj = {
        "name": "fetch-weights",
        "image": RCLONE.ref,
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "WEIGHTS_URI", "value": wc.uri}, {"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [
            {"name": "weights", "mountPath": wc.mount_path},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security(read_only_root=True),
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    }
    if wc.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": wc.credentials_secret}}]
    return container


def volumes(w: Workload) -> tuple[list[Obj], list[Obj]]:
    wc = w.k8s.weights
    vols: list[Obj] = [{"name": "state", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    mounts: list[Obj] = [
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if wc.source == "volume":
        claim = {"claimName": wc.claim, "readOnly": True}
        vols.append({"name": "weights", "persistentVolumeClaim": claim})
        mounts.append({"name": "weights", "mountPath": wc.mount_path, "readOnly": True})
    elif wc.source == "object_storage":
        vols.append({"name": "weights", "emptyDir": {"sizeLimit": wc.size_limit}})
        mounts.append({"name": "weights", "mountPath": wc.mount_path, "readOnly": True})
    if w.k8s.engine != "embedded":
        # Tensor-parallel workers share tensors through /dev/shm (the runtime gives 64 MiB).
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return vols, mounts


def replica_deployment(cfg: ShipitConfig, w: Workload) -> Obj:
    k, d = w.k8s, w.deployment
    labels = workload_labels(w)
    selector = {**deployment_selector(d.name), "shipit.dev/version": w.version}
    selector |= {"shipit.dev/pool": w.pool.name, OWNER_LABEL: "workload"}
    command, args = engine_command(w)
    vols, mounts = volumes(w)
    container: Obj = {
        "name": "replica",
        "image": cfg.kubernetes.images.ref(k.engine),
        "imagePullPolicy": cfg.kubernetes.images.pull_policy,
        "args": args,
        "env": [
            {"name": "SHIPIT_HOME", "value": STATE_DIR},
            {"name": "HOME", "value": STATE_DIR},
            {"name": "HF_HOME", "value": f"{STATE_DIR}/hf"},
        ],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": resources(k),
        **probes(d),
        "volumeMounts": mounts,
        # The GPU engines write compiler caches outside $HOME; the embedded one does not.
        "securityContext": container_security(read_only_root=k.engine == "embedded"),
    }
    if command is not None:
        container["command"] = command
    pool = w.pool
    spec: Obj = {
        "serviceAccountName": REPLICA_SA,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": math.ceil(d.drain_timeout_s) + GRACE_MARGIN_S,
        "securityContext": pod_security(),
        "topologySpreadConstraints": spread(selector),
        "containers": [container],
        "volumes": vols,
    }
    if k.weights.source == "object_storage":
        spec["initContainers"] = [fetch_weights(w)]
    if pool.node_selector:
        spec["nodeSelector"] = dict(pool.node_selector)
    tolerations = [t.model_dump(exclude_none=True) for t in pool.tolerations]
    if k.gpus:
        # The NVIDIA device plugin's usual taint on GPU nodes.
        tolerations.append({"key": GPU, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        spec["tolerations"] = tolerations
    aff = affinity(pool)
    if aff:
        spec["affinity"] = aff
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(w.name, cfg.kubernetes.namespace, labels),
        "spec": {
            "replicas": w.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": {**common_labels(), **labels, OWNER_LABEL: "workload"}},
                "spec": spec,
            },
        },
    }
