"""A replica's life: loading → ready → draining → stopped (or failed), and in-flight work.

Owns the phase, the count of in-flight generation requests and the tasks serving them, and
the drain: refuse new work, wait until in-flight work finishes or ``drain_timeout_s``
passes, then cancel what is left (which aborts it in the engine). Runs on the event loop;
it must not touch the engine or HTTP itself.
"""

from __future__ import annotations

import asyncio
import enum
import logging

log = logging.getLogger("shipit.replica")


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.error: str | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.drained = asyncio.Event()

    @property
    def accepting(self) -> bool:
        return self.phase is Phase.READY

    @property
    def num_inflight(self) -> int:
        return len(self._tasks)

    def ready(self) -> None:
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY

    def fail(self, error: str) -> None:
        self.phase = Phase.FAILED
        self.error = error
        self.drained.set()

    def enter(self, task: asyncio.Task[object]) -> None:
        """``task`` now serves a generation request; drain waits for it."""
        self._tasks.add(task)
        self._idle.clear()

    def leave(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Refuse new work, wait for in-flight work; returns how many were cancelled."""
        if self.phase in (Phase.DRAINING, Phase.STOPPED):
            await self.drained.wait()
            return 0
        self.phase = Phase.DRAINING
        log.info("draining: %d request(s) in flight, timeout %.1f s", self.num_inflight, timeout_s)
        cancelled = 0
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            cancelled = len(self._tasks)
            log.warning("drain timeout: cancelling %d request(s)", cancelled)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait_for(self._idle.wait(), 5.0)
        self.phase = Phase.STOPPED
        self.drained.set()
        return cancelled
