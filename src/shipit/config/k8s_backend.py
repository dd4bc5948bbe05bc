"""``kubernetes_backend:`` in a deployment of ``shipit.yaml``: how ``shipit up`` runs its
replicas as pods when ``backend: kubernetes`` (``backends.kubernetes``). Namespace, image, GPUs,
version and node pool default to the top-level ``kubernetes:`` section (the one
``shipit render k8s`` reads), so one file describes both; set them here only to override.
Validation only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shipit.config.kubernetes import Engine, Toleration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeHealthSettings(_Strict):
    """When a node is cordoned (``spec.unschedulable``) after replica failures on it."""

    failures_to_cordon: int = Field(3, ge=1, description="replica failures on one node")
    hardware_failures_to_cordon: int = Field(
        1, ge=1, description="failures with an XID-like (GPU hardware) message"
    )
    window_s: float = Field(600.0, gt=0, description="failures older than this are forgotten")
    max_cordoned_fraction: float = Field(
        0.25, ge=0, le=1, description="most nodes unschedulable at once (by anyone)"
    )


class KubernetesBackendConfig(_Strict):
    namespace: str = Field("default", description="namespace of the replica pods")
    kubeconfig: str | None = Field(
        None, description="kubeconfig file; absent: in-cluster service account, else $KUBECONFIG"
    )
    image: str = Field("ghcr.io/shipit/replica:latest", description="replica container image")
    engine: Engine = Field(
        "embedded",
        description="what the pod runs: embedded (`shipit replica`), vllm (`vllm serve`) or "
        "sglang (`sglang.launch_server`), each its own OpenAI-compatible server",
    )
    engine_args: list[str] = Field(
        default_factory=list, description="extra flags for vllm or sglang (after shipit's)"
    )
    command: list[str] = Field(
        default_factory=lambda: ["shipit", "replica"],
        description="the embedded engine's command; the replica flags follow it",
    )
    port: int = Field(8000, ge=1, le=65535)
    service: str = Field(
        "shipit-replicas",
        description="headless Service the pods join (hostname.service.namespace.svc is the URL)",
    )
    version: str = Field(
        "v1",
        description="version label of pods started without one (the gateway labels its pods "
        "with the version they run: the deployment's rollout.version, or a rollout's new one)",
    )
    pool: str = Field("on_demand", description="capacity pool label of new pods")
    gpus: int = Field(1, ge=0, description="nvidia.com/gpu per replica pod")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    admin_token_secret: str | None = Field(
        None, description="Secret (key `token`) holding the replicas' admin token"
    )
    cordon_nodes: bool | None = Field(
        None, description="cordon failing nodes (default: the kubernetes: section's cordon_nodes)"
    )
    keep_replicas_on_exit: bool = Field(
        True, description="leave pods running when the gateway exits (a restart adopts them)"
    )
    node_health: NodeHealthSettings = NodeHealthSettings()
