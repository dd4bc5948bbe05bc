"""``FakeBackend``: an in-memory ``ReplicaBackend`` for unit tests; it starts nothing real.

Handles point at ``http://fake-<id>`` (pair with ``services.upstream_fake.FakeUpstream``); the
test can mark a replica dead, or ``kill`` it as a crash would. It records every start, stop
and kill.
"""

from __future__ import annotations

from shipit.backends.base import ReplicaHandle, ReplicaSpec


class FakeBackend:
    def __init__(self) -> None:
        self._handles: dict[str, ReplicaHandle] = {}
        self.started: list[ReplicaSpec] = []
        self.stopped: list[str] = []
        self.dead: set[str] = set()
        self.killed: list[str] = []
        self._seq = 0

    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        handles = []
        for _ in range(count):
            rid = f"{spec.deployment}-{self._seq}"
            self._seq += 1
            handle = ReplicaHandle(rid, f"http://fake-{rid}", spec.deployment, pid=None)
            self._handles[rid] = handle
            self.started.append(spec)
            handles.append(handle)
        return handles

    def list(self) -> list[ReplicaHandle]:
        return list(self._handles.values())

    def alive(self, handle: ReplicaHandle) -> bool:
        return handle.replica_id in self._handles and handle.replica_id not in self.dead

    async def stop(self, handle: ReplicaHandle) -> None:
        if self._handles.pop(handle.replica_id, None) is not None:
            self.stopped.append(handle.replica_id)

    async def kill(self, handle: ReplicaHandle) -> None:
        """Dead at once (SIGKILL): still listed, no longer alive, until it is stopped."""
        if handle.replica_id in self._handles:
            self.dead.add(handle.replica_id)
            self.killed.append(handle.replica_id)

    async def close(self) -> None:
        for handle in self.list():
            await self.stop(handle)
