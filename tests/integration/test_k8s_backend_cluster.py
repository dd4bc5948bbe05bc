"""Opt-in: the Kubernetes replica backend against a real cluster (kind, k3s).

Runs only when ``KUBECONFIG`` points at a cluster and ``SHIPIT_K8S_REPLICA_IMAGE`` names a
replica image the cluster can pull (``shipit build``'s embedded image); skipped otherwise, as on
the machines this project is developed on, where no cluster runs. Starts one replica pod (no
GPU), waits until the backend's watch sees it scheduled, and deletes it.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from shipit.backends.base import ReplicaSpec
from shipit.backends.kubernetes import KubernetesBackend
from shipit.config.gateway import DEFAULT_MODEL
from shipit.config.k8s_backend import KubernetesBackendConfig

KUBECONFIG = os.environ.get("KUBECONFIG")
IMAGE = os.environ.get("SHIPIT_K8S_REPLICA_IMAGE")

pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and IMAGE),
    reason="opt-in: needs KUBECONFIG pointing at a real cluster and SHIPIT_K8S_REPLICA_IMAGE",
)


def test_a_replica_pod_on_a_real_cluster() -> None:
    async def main() -> None:
        cfg = KubernetesBackendConfig(
            kubeconfig=KUBECONFIG,
            namespace=os.environ.get("SHIPIT_K8S_NAMESPACE", "default"),
            image=IMAGE or "",
            gpus=0,
            command=["shipit", "replica"],
        )
        backend = KubernetesBackend(cfg, deployment="e2e")
        try:
            [h] = await backend.start(ReplicaSpec("e2e", DEFAULT_MODEL), 1)
            for _ in range(600):
                view = backend.replicas[h.replica_id].view
                if view is not None and view.scheduled:
                    break
                await asyncio.sleep(0.5)
            phases = await backend.cold_start_phases(h.replica_id)
            assert [p for p, _ in phases][:1] == ["schedule"]
            await backend.stop(h)
            assert backend.list() == []
        finally:
            await backend.close()

    asyncio.run(main())
