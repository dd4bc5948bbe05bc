"""An open-loop streaming load for integration tests: chat requests sent at a fixed rate
whatever their latency, each checked to have been answered in full (status 200, the stream
ends with ``[DONE]``, no error event)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Result:
    status: int
    complete: bool
    replica: str
    error: str = ""


@dataclass
class OpenLoop:
    """Streamed chat requests sent at a fixed rate whatever their latency (open loop)."""

    url: str
    model: str
    rate_per_s: float
    max_tokens: int = 12
    timeout_s: float = 60.0  # the client's patience per request
    prompt: Callable[[int], str] | None = None  # the i-th request's message; None: a short one
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _prompt(self, i: int) -> str:
        return self.prompt(i) if self.prompt is not None else f"tell me about item {i} please"

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self._prompt(i)}],
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        headers = {"x-shipit-session": f"s{i % 40}"}
        status, replica, data, error = 0, "-", b"", ""
        try:
            async with client.stream(
                "POST", self.url + "/v1/chat/completions", json=body, headers=headers
            ) as r:
                status, replica = r.status_code, r.headers.get("x-shipit-replica", "-")
                async for chunk in r.aiter_bytes():
                    data += chunk
        except httpx.HTTPError as exc:
            status, error = -1, f"{type(exc).__name__}: {exc}"
        complete = data.rstrip().endswith(b"data: [DONE]") and b'"error"' not in data
        self.results.append(Result(status, complete, replica, error))

    async def _run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            i = 0
            start = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(client, i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                await asyncio.sleep(max(0.0, start + i / self.rate_per_s - time.monotonic()))
            await asyncio.gather(*tasks)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=90)

    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != 200 or not r.complete]
