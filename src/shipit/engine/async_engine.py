"""An asyncio face on the engine for servers: one stream of outputs per request.

The engine's step loop runs in one dedicated thread (numpy releases the GIL inside BLAS,
so the event loop stays responsive while a step computes). Requests and aborts cross into
that thread through a lock-protected inbox; outputs cross back with
``call_soon_threadsafe`` into a per-request ``asyncio.Queue``. A consumer that stops
iterating (a client that disconnected) aborts its request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from shipit.engine.engine import EngineStats, LLMEngine, RequestOutput
from shipit.engine.sampling import SamplingParams

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: list[Callable[[], None]] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[object]]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.step_error: BaseException | None = None

    # ----- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shipit-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def __aenter__(self) -> AsyncEngine:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # ----- requests --------------------------------------------------------------------
    async def generate(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        lora_name: str | None = None,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs. Invalid requests raise here, before any output."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        added: asyncio.Future[None] = loop.create_future()

        def add() -> None:
            try:
                self.engine.add_request(
                    request_id,
                    prompt,
                    params,
                    priority=priority,
                    lora_name=lora_name,
                    cache_salt=cache_salt,
                )
            except Exception as exc:  # the caller gets the error, the loop goes on
                loop.call_soon_threadsafe(_settle, added, exc)
                return
            self._streams[request_id] = (loop, queue)
            loop.call_soon_threadsafe(_settle, added, None)

        self._submit(add)
        try:
            await added
        except asyncio.CancelledError:
            # The consumer left while the request sat in the inbox: the engine thread still
            # adds it, so queue an abort behind it (the inbox runs in order).
            self.abort(request_id)
            raise
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Failure):
                    raise item.error
                assert isinstance(item, RequestOutput)
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        def do_abort() -> None:
            self._streams.pop(request_id, None)
            self.engine.abort(request_id)

        self._submit(do_abort)

    def call(self, fn: Callable[[LLMEngine], T]) -> asyncio.Future[T]:
        """Run ``fn(engine)`` between steps (load an adapter, read stats) and await it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn(self.engine)
            except Exception as exc:
                loop.call_soon_threadsafe(_fail, fut, exc)
            else:
                loop.call_soon_threadsafe(_settle_value, fut, result)

        self._submit(run)
        return fut

    async def stats(self) -> EngineStats:
        """A consistent snapshot, taken between steps: the engine thread owns the state, so
        reading it from another thread could see a queue in the middle of a change."""
        return await self.call(lambda e: e.stats())

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    # ----- the engine thread -------------------------------------------------------------
    def _submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._inbox.append(fn)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping:
            with self._lock:
                inbox, self._inbox = self._inbox, []
                self._wake.clear()
            for fn in inbox:
                fn()
            if not self.engine.has_unfinished_requests():
                self._wake.wait()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # a bug in a step must not hang every client
                self.step_error = exc
                self._fail_all(exc)
                continue
            for out in outputs:
                self._deliver(out)

    def _deliver(self, out: RequestOutput) -> None:
        target = self._streams.get(out.request_id)
        if target is None:
            return
        if out.finished:
            del self._streams[out.request_id]
        loop, queue = target
        loop.call_soon_threadsafe(queue.put_nowait, out)

    def _fail_all(self, exc: BaseException) -> None:
        for request_id, (loop, queue) in list(self._streams.items()):
            self.engine.abort(request_id)
            loop.call_soon_threadsafe(queue.put_nowait, _Failure(exc))
        self._streams.clear()


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _fail(fut: asyncio.Future[T], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _settle_value(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)
