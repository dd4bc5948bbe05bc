"""``ray_backend:`` in a deployment of ``shipit.yaml``: how ``shipit up`` runs its replicas as Ray
actors when ``backend: ray`` (``backends.ray``). Which cluster (address), what each replica
reserves on its node (CPUs, GPUs, memory, custom resources, its capacity pool's resource), and
how replicas are placed. Validation only: nothing here imports Ray.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Ray's own resource names, set through their own fields so the units are clear.
BUILTIN_RESOURCES = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory_bytes"}
_POOL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RayBackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        None,
        description="the Ray cluster: the head's host:port (GCS, 6379 by default), 'auto' (the "
        "cluster `ray start` left on this machine) or ray://host:port; absent: $RAY_ADDRESS, "
        "else a single-node Ray started inside `shipit up`",
    )
    namespace: str = Field("shipit", description="Ray namespace of the replica actors")
    pool: str | None = Field(
        None,
        description="capacity pool: each replica takes one unit of the custom resource "
        "`pool:<name>`, so it runs only on nodes started with it (ray start --resources "
        "'{\"pool:spot\": 8}' holds up to 8 replicas); absent: any node",
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (CUDA_VISIBLE_DEVICES)")
    memory_bytes: int | None = Field(None, ge=0, description="memory reserved per replica")
    resources: dict[str, float] = Field(
        default_factory=dict, description="other custom resources per replica, e.g. {H100: 1}"
    )
    spread: bool = Field(
        True,
        description="place each new replica on the node (with its resources) that runs the "
        "fewest of the deployment's replicas; false: wherever Ray's scheduler puts it",
    )
    replica_host: str | None = Field(
        None,
        description="address each replica binds and is reached at; absent: its node's IP as "
        "Ray knows it",
    )
    log_dir: str | None = Field(
        None, description="directory for replica logs on each node (default: a temporary one)"
    )
    placement_timeout_s: float = Field(
        120.0,
        gt=0,
        description="how long a replica may wait for a node with its resources before the "
        "start fails (an autoscaling Ray cluster adds nodes meanwhile)",
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env of the replica actors (e.g. pip: [shipit])"
    )

    @field_validator("pool")
    @classmethod
    def _pool_name(cls, value: str | None) -> str | None:
        if value is not None and not _POOL_NAME.match(value):
            raise ValueError(
                f"pool {value!r}: use letters, digits, '_', '.' or '-' (it becomes the Ray "
                f"resource pool:<name>)"
            )
        return value

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in BUILTIN_RESOURCES:
                raise ValueError(
                    f"resources.{name}: set it with {BUILTIN_RESOURCES[name]} instead "
                    "(resources is for custom resources)"
                )
            if not name or amount < 0:
                raise ValueError(
                    f"resources.{name or '<empty>'}={amount}: give a resource name and an "
                    "amount >= 0"
                )
        return value
