"""``Client``: the synchronous face of ``AsyncClient``, for code without an event loop.

It runs one ``AsyncClient`` on a private event loop in a daemon thread (so connections stay
pooled between calls, as in the async client) and waits for each call; a stream is an
iterator whose early exit cancels the request. Thread-safe: calls from several threads share
the loop and the connections.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from shipit.client.aio import AsyncClient, Protocol, RetryPolicy
from shipit.client.jobs import AsyncJobs

T = TypeVar("T")


class Client:
    """``with Client("http://127.0.0.1:8000") as c: c.chat(model=..., messages=[...])``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        protocol: Protocol = "http",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        tls_ca: str | None = None,
        jobs_url: str | Sequence[str] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="shipit-client", daemon=True
        )
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(
                endpoints,
                protocol=protocol,
                api_key=api_key,
                timeout_s=timeout_s,
                retry=retry,
                headers=headers,
                tls_ca=tls_ca,
                jobs_url=jobs_url,
            )

        try:
            self._client = self._run(make())
        except BaseException:
            self._stop_loop()
            raise
        self.protocol = protocol

    @property
    def jobs(self) -> Jobs:
        """Async requests and batches, as ``AsyncClient.jobs`` but blocking."""
        return Jobs(self._client.jobs, self._run)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def chat(self, **body: Any) -> dict[str, Any]:
        return self._run(self._client.chat(**body))

    def chat_stream(self, **body: Any) -> Iterator[dict[str, Any]]:
        return self._iterate(self._client.chat_stream(**body))

    def complete(self, **body: Any) -> dict[str, Any]:
        return self._run(self._client.complete(**body))

    def complete_stream(self, **body: Any) -> Iterator[dict[str, Any]]:
        return self._iterate(self._client.complete_stream(**body))

    def _iterate(self, agen: Any) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Jobs:
    """The blocking face of ``client.jobs.AsyncJobs``: the same methods, each waited for."""

    def __init__(self, jobs: AsyncJobs, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._jobs, self._run = jobs, run

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._jobs, name)
        if name.startswith("_") or name == "aclose" or not callable(method):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(method(*args, **kwargs))

        return call
