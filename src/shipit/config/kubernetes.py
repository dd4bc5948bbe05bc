"""The ``kubernetes:`` section of ``shipit.yaml``: how ``shipit render k8s`` places the fleet.

Owns the pydantic models for node pools (a capacity pool with its node selector, tolerations
and required node labels), where each deployment's replicas run (engine, GPUs per replica,
resources, weights, and ``placements``: one workload per version x node pool), the images, and
the monitoring objects. Nothing here is read by ``shipit up``; a file without the section
renders with the defaults (one pool with no GPUs, the embedded engine, ``v1``).

Example::

    kubernetes:
      namespace: llm
      node_pools:
        - {name: h100-reserved, capacity: reserved, gpu: H100,
           node_selector: {cloud.google.com/gke-accelerator: nvidia-h100-80gb}}
        - {name: h100-spot, capacity: spot, gpu: H100,
           tolerations: [{key: cloud.google.com/gke-spot, value: "true", effect: NoSchedule}]}
      deployments:
        chat:
          engine: vllm
          gpus: 1
          weights: {source: volume, claim: llama-weights}
          placements:
            - {pool: h100-reserved, replicas: 2}
            - {pool: h100-spot, replicas: 2}

Pydantic, ``extra="forbid"``; no IO here.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Engine = Literal["embedded", "vllm", "sglang"]
ENGINES: tuple[Engine, ...] = ("embedded", "vllm", "sglang")
# A DNS-1123 label: what every name that ends up in an object name or a label value must be.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_label(value: str, what: str) -> str:
    if len(value) > 40 or not _LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a lowercase DNS label (a-z, 0-9, '-', at most 40 "
            "characters, starting and ending with a letter or digit); rename it"
        )
    return value


class Toleration(_Strict):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class NodePoolConfig(_Strict):
    """A set of nodes replicas may be scheduled on, and how they were bought."""

    name: str = Field(description="a DNS label; becomes part of workload names")
    capacity: Literal["reserved", "on_demand", "spot"] = "on_demand"
    gpu: str | None = Field(None, description="accelerator kind, e.g. H100 (a label on pods)")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    required_node_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="node affinity, required: label -> allowed values (operator In)",
    )
    preferred_node_labels: dict[str, list[str]] = Field(
        default_factory=dict, description="node affinity, preferred (weight 50 each)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_label(name, "node pool name")


class WeightsConfig(_Strict):
    """Where a replica's weights come from. Never baked into the image."""

    source: Literal["none", "volume", "object_storage"] = Field(
        "none",
        description="none: the image's packaged model (embedded default model only); volume: "
        "a PersistentVolumeClaim mounted read-only; object_storage: an init container copies "
        "them into an emptyDir",
    )
    claim: str | None = Field(None, description="volume: the PersistentVolumeClaim's name")
    uri: str | None = Field(None, description="object_storage: an rclone remote path, s3:b/p")
    credentials_secret: str | None = Field(
        None, description="object_storage: a Secret with RCLONE_CONFIG_* variables"
    )
    mount_path: str = "/models"
    size_limit: str = Field("100Gi", description="object_storage: the emptyDir's size limit")

    @model_validator(mode="after")
    def _source_fields(self) -> Self:
        if self.source == "volume" and not self.claim:
            raise ValueError("weights.source is volume: set weights.claim to a PVC name")
        if self.source == "object_storage" and not self.uri:
            raise ValueError("weights.source is object_storage: set weights.uri (s3:bucket/path)")
        if not self.mount_path.startswith("/"):
            raise ValueError(f"weights.mount_path {self.mount_path!r} must be absolute")
        return self


class Placement(_Strict):
    """One replica workload: this deployment's ``version`` on node pool ``pool``."""

    pool: str = "default"
    version: str = "v1"
    replicas: int | None = Field(None, ge=0, description="default: the deployment's replicas")

    @field_validator("version")
    @classmethod
    def _version(cls, version: str) -> str:
        return check_label(version, "placement version")


class ResourcesConfig(_Strict):
    cpu: str = "2"
    memory: str = "8Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = Field(None, description="default: memory (no overcommit)")


class K8sDeploymentConfig(_Strict):
    """Where and how one shipit.yaml deployment's replicas run on the cluster."""

    engine: Engine = "embedded"
    gpus: int = Field(0, ge=0, le=16, description="nvidia.com/gpu per replica (the TP degree)")
    resources: ResourcesConfig = ResourcesConfig()
    weights: WeightsConfig = WeightsConfig()
    engine_args: list[str] = Field(default_factory=list, description="extra engine flags")
    placements: list[Placement] = Field(default_factory=lambda: [Placement()])
    max_unavailable: int = Field(1, ge=1, description="PodDisruptionBudget per deployment")

    @model_validator(mode="after")
    def _engine_gpus(self) -> Self:
        if self.engine != "embedded" and self.gpus == 0:
            raise ValueError(
                f"engine {self.engine} needs GPUs: set gpus (per replica, e.g. 1), or use "
                "engine: embedded"
            )
        keys = [(p.pool, p.version) for p in self.placements]
        if len(set(keys)) != len(keys):
            raise ValueError(f"placements repeat a (pool, version) pair: {keys}")
        if not self.placements:
            raise ValueError("placements needs at least one entry, e.g. [{pool: default}]")
        return self


class MonitoringConfig(_Strict):
    service_monitor: bool = Field(True, description="a ServiceMonitor (Prometheus Operator)")
    prometheus_rule: bool = Field(True, description="a PrometheusRule with shipit's rules")
    dashboards: bool = Field(True, description="a ConfigMap of Grafana dashboards")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="extra labels on those objects, e.g. {release: prometheus} for a "
        "kube-prometheus-stack that selects on it",
    )


class ImagesConfig(_Strict):
    """Image references; empty means ``shipit build``'s names under ``registry``."""

    registry: str = "localhost/shipit"
    tag: str = "latest"
    gateway: str | None = None
    embedded: str | None = None
    vllm: str | None = None
    sglang: str | None = None
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    def ref(self, kind: Literal["gateway", "embedded", "vllm", "sglang"]) -> str:
        """The image for the gateway or one engine's replicas."""
        given: str | None = getattr(self, kind)
        name = "gateway" if kind == "gateway" else f"replica-{kind}"
        return given or f"{self.registry}/{name}:{self.tag}"


class KubernetesConfig(_Strict):
    namespace: str = "shipit"
    gateway_replicas: int = Field(2, ge=1)
    gateway_service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    images: ImagesConfig = ImagesConfig()
    node_pools: list[NodePoolConfig] = Field(
        default_factory=lambda: [NodePoolConfig(name="default")]
    )
    deployments: dict[str, K8sDeploymentConfig] = Field(
        default_factory=dict, description="shipit.yaml deployment name -> placement"
    )
    cordon_nodes: bool = Field(
        False,
        description="let the gateway cordon nodes after repeated hardware-looking failures "
        "(adds a ClusterRole with nodes get/patch)",
    )
    monitoring: MonitoringConfig = MonitoringConfig()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str) -> str:
        return check_label(namespace, "namespace")

    @model_validator(mode="after")
    def _pools_known(self) -> Self:
        names = [p.name for p in self.node_pools]
        if len(set(names)) != len(names):
            raise ValueError(f"node_pools names must be unique, got {names}")
        for dep, k in self.deployments.items():
            for p in k.placements:
                if p.pool not in names:
                    raise ValueError(
                        f"deployments.{dep}.placements names pool {p.pool!r}, which is not in "
                        f"node_pools {names}; add it there or fix the name"
                    )
        return self
