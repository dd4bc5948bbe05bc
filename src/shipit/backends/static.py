"""``StaticBackend``: external OpenAI-compatible endpoints (vLLM, SGLang, another shipit).

It starts nothing: ``start`` hands out one handle per configured URL, and ``stop`` only forgets
it (someone else owns those servers). It must not signal or contact the endpoints; the router's
monitor health-checks them like any replica.
"""

from __future__ import annotations

from shipit.backends.base import ReplicaHandle, ReplicaSpec, base_url


class StaticBackend:
    def __init__(self, urls: dict[str, list[str]]) -> None:
        """``urls``: deployment name -> endpoint URLs (with or without ``/v1``)."""
        self.urls = urls
        self._handles: dict[str, ReplicaHandle] = {}

    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        handles = []
        for i, url in enumerate(self.urls.get(spec.deployment, [])):
            handle = ReplicaHandle(
                f"{spec.deployment}-ext{i}", base_url(url), spec.deployment, True
            )
            self._handles[handle.replica_id] = handle
            handles.append(handle)
        return handles

    def list(self) -> list[ReplicaHandle]:
        return list(self._handles.values())

    def alive(self, handle: ReplicaHandle) -> bool:
        return handle.replica_id in self._handles

    async def stop(self, handle: ReplicaHandle) -> None:
        self._handles.pop(handle.replica_id, None)

    async def close(self) -> None:
        self._handles.clear()
