"""The job worker: claims queued lines from the store and runs them through the gateway's
request path, as many at a time as the fleet can spare.

``AsyncJobStore`` runs a synchronous ``JobStore`` on one worker thread (SQLite connections are
not shared between threads; the event loop never blocks on the disk). ``JobRunner.run`` loops:
finalize / expire batches (``store.tick``), ask ``slots(in_flight)`` how many more job requests
may run now (``policy.jobs``), claim that many with a lease, run each with ``execute`` (the
gateway's request core at the lowest priority), write the answer (``complete``) or give the
line back (``release``: admission refused it, or a replica failure to retry later), renew the
leases of what runs, and deliver due webhooks. It must not know HTTP routes or the admission
queue: ``execute`` and ``slots`` are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from shipit.config.jobs import JobsConfig
from shipit.jobs.formats import WorkItem
from shipit.jobs.store import JobStore
from shipit.jobs.webhooks import WebhookSender
from shipit.policy.jobs import Backlog

log = logging.getLogger("shipit.jobs")
T = TypeVar("T")


class AsyncJobStore:
    """``await jobs.call(store.method, *args)``: the store's methods on its own thread."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipit-jobs")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await self.call(self.store.close)
        self._pool.shutdown(wait=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What running one line gave: an answer to keep (``status``, ``body``), or ``retry``
    (admission refused it: no attempt counted; or a replica failure: counted)."""

    status: int = 0
    body: bytes = b""
    retry: bool = False
    count_attempt: bool = True
    why: str = ""


Execute = Callable[[WorkItem], Awaitable[Outcome]]


def owner_id() -> str:
    """This gateway process, unique enough among gateways sharing a store."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns() % 10**9:x}"


class JobRunner:
    def __init__(
        self,
        jobs: AsyncJobStore,
        execute: Execute,
        slots: Callable[[int], int],
        config: JobsConfig,
        *,
        wall: Callable[[], float] = time.time,
        webhooks: WebhookSender | None = None,
        owner: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self._execute = execute
        self._slots = slots
        self.config = config
        self.wall = wall
        self.webhooks = webhooks
        self.owner = owner or owner_id()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.pending = 0  # queued + running lines in the store, as of the last poll
        self.backlog: tuple[Backlog, ...] = ()  # the same lines by completion window
        self._wake = asyncio.Event()
        self._last_renew = 0.0
        self._stopping = False
        self._yielding: set[str] = set()  # lines stopped to give their slot to a request

    def wake(self) -> None:
        """New work arrived (or a slot came free): look now, not at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Until ``shutdown``: then the lines it runs go back to the queue."""
        while not self._stopping:
            try:
                await self.step()
            except Exception:
                log.exception("the job worker failed a step; trying again")
            self._wake.clear()
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancellation
                async with asyncio.timeout(self.config.poll_interval_s):
                    await self._wake.wait()
        await self.stop()

    def shutdown(self) -> None:
        """Ask ``run`` to finish its step, give its lines back and return."""
        self._stopping = True
        self._wake.set()

    def yield_line(self, among: Iterable[str] | None = None) -> str | None:
        """Stop the youngest running line (of ``among``, when given) so that a waiting
        interactive request gets its slot; the line goes back to the queue without counting
        an attempt and runs again later. Its id, or None when no such line runs."""
        allowed = None if among is None else set(among)
        for item_id in reversed(list(self.running)):
            if item_id in self._yielding or (allowed is not None and item_id not in allowed):
                continue
            self._yielding.add(item_id)
            self.running[item_id].cancel()
            return item_id
        return None

    async def step(self) -> None:
        now = self.wall()
        for bid in await self.jobs.call(self.store.tick, now):
            log.info("batch %s finalized", bid)
        free = self._slots(len(self.running)) - len(self.running)
        if free > 0:
            lease_s = self.config.lease_s
            for item in await self.jobs.call(self.store.claim, self.owner, free, lease_s, now):
                task = asyncio.create_task(self._work(item))
                self.running[item.id] = task
        if self.running and now - self._last_renew >= self.config.lease_s / 3:
            self._last_renew = now
            ids = list(self.running)
            await self.jobs.call(self.store.renew, self.owner, ids, self.config.lease_s, now)
        self.backlog = tuple(await self.jobs.call(self.store.backlog, now))
        self.pending = sum(b.lines for b in self.backlog)
        if self.webhooks is not None:
            await self.webhooks.deliver_due(self.jobs, now)

    async def _work(self, item: WorkItem) -> None:
        try:
            try:
                outcome = await self._execute(item)
            except asyncio.CancelledError:
                if item.id not in self._yielding or self._stopping:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # a yield, not a shutdown: put the line back below
                outcome = Outcome(retry=True, count_attempt=False, why="yielded its slot")
            except Exception as exc:
                log.exception("job line %s failed in the gateway", item.id)
                outcome = Outcome(retry=True, why=f"gateway error: {exc}")
            if (
                outcome.retry
                and outcome.count_attempt
                and item.attempts >= self.config.max_attempts
            ):
                body = outcome.body or _error(
                    f"gave up after {item.attempts} attempts: {outcome.why}"
                )
                outcome = Outcome(outcome.status or 502, body)
            if outcome.retry:
                delay = (
                    min(30.0, 0.25 * 2 ** min(item.attempts, 7)) if outcome.count_attempt else 0.5
                )
                await self.jobs.call(
                    self.store.release,
                    self.owner,
                    item.id,
                    self.wall() + delay,
                    count_attempt=outcome.count_attempt,
                )
            else:
                kept = await self.jobs.call(
                    self.store.complete,
                    self.owner,
                    item.id,
                    outcome.status,
                    outcome.body,
                    self.wall(),
                )
                if not kept:
                    log.warning("job line %s was taken over by another worker", item.id)
        finally:
            self.running.pop(item.id, None)
            self._yielding.discard(item.id)
            self.wake()

    async def stop(self) -> None:
        """Stop running lines and give them back to the queue (another worker, or this one
        after a restart, runs them again)."""
        tasks = list(self.running.items())
        for _, task in tasks:
            task.cancel()
        await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)
        now = self.wall()
        for item_id, _ in tasks:
            with contextlib.suppress(Exception):
                await self.jobs.call(
                    self.store.release, self.owner, item_id, now, count_attempt=False
                )


def _error(message: str) -> bytes:
    import json

    return json.dumps(
        {"error": {"message": message, "type": "upstream_error", "param": None, "code": 502}}
    ).encode()
