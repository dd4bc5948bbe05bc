"""Where replicas run: the ``ReplicaBackend`` protocol, the records it trades in, and the
``Registrar`` through which the fleet reports registrations.

A backend starts replicas of a ``ReplicaSpec``, lists them, tells whether each is still alive,
and stops them gracefully; readiness to serve is the health monitor's business
(``GET /health``). Implementations: ``local`` (processes on this machine), ``static`` (external
endpoints), ``fake`` (tests). A ``Registrar`` is where replicas are announced, change state and
disappear: ``services.registry.ReplicaRegistry`` is one. This module holds no behaviour and must
not import a concrete backend or the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shipit.core.fleet import ReplicaState


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What to run: one deployment's replica, as the ``shipit replica`` command takes it."""

    deployment: str
    model: str
    simulate: str | None = None
    extra_args: tuple[str, ...] = ()
    drain_timeout_s: float = 30.0
    env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    version: str | None = None  # a rollout's version; None: the deployment's own


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    replica_id: str
    url: str  # base URL, without /v1
    deployment: str
    external: bool = False  # not ours to stop
    pid: int | None = None
    log_path: str | None = None


class ReplicaBackend(Protocol):
    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        """Launch ``count`` replicas; returns at once (they become ready later)."""
        ...

    async def stop(self, handle: ReplicaHandle) -> None:
        """Stop one replica gracefully (drain, then exit); idempotent."""
        ...

    def list(self) -> list[ReplicaHandle]: ...

    def alive(self, handle: ReplicaHandle) -> bool:
        """Whether the replica's process (or endpoint record) still exists."""
        ...

    async def close(self) -> None:
        """Stop everything this backend started."""
        ...


class Registrar(Protocol):
    """Where one deployment's replicas are registered (``services.registry.ReplicaRegistry``)."""

    def add(
        self,
        replica_id: str,
        url: str,
        *,
        state: ReplicaState = ...,
        external: bool = ...,
        backend: str | None = ...,
        version: str | None = ...,
    ) -> object:
        """A new replica at ``url`` (``starting`` unless told otherwise), running ``version``
        (default: the deployment's current one)."""
        ...

    def set_state(self, replica_id: str, state: ReplicaState) -> object: ...

    def remove(self, replica_id: str) -> object:
        """It is gone: no longer started, stopped by us or not."""
        ...


def base_url(url: str) -> str:
    """``http://h:8000/v1/`` -> ``http://h:8000``: replicas are addressed by their root."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
