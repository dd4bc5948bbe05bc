"""``AsyncClient``: chat and completions over HTTP/SSE, WebSocket or gRPC behind one interface.

One transport per endpoint (``client.transports``), created once and kept (pooled keep-alive
connections). Each call gets an idempotency key (sent as ``Idempotency-Key``, the same on
every attempt) and is retried on connection errors, timeouts, 408, 429 and 5xx: on the next
endpoint at once when there is one it has not tried, else after a backoff (exponential with
jitter, capped) that is never shorter than the server's ``Retry-After``. A stream is retried
only until its first chunk: after that a failure is raised, never replayed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from shipit.client.errors import APIError, ShipitClientError, retryable
from shipit.client.jobs import AsyncJobs
from shipit.client.transports import (
    GrpcTransport,
    HttpTransport,
    Kind,
    Transport,
    WebSocketTransport,
)

Protocol = Literal["http", "ws", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "ws", "grpc")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` attempts after the first; backoff ``base_s * 2**n`` (full jitter),
    at most ``max_s``, at least the server's ``Retry-After``."""

    max_retries: int = 3
    base_s: float = 0.25
    max_s: float = 8.0

    def delay_s(self, retry: int, retry_after_s: float | None, rand: Callable[[], float]) -> float:
        backoff: float = min(self.max_s, self.base_s * 2.0**retry) * rand()
        return max(backoff, retry_after_s or 0.0)


def _transport(
    protocol: Protocol, endpoint: str, api_key: str | None, tls_ca: str | None
) -> Transport:
    if protocol == "http":
        return HttpTransport(endpoint, api_key=api_key, tls_ca=tls_ca)
    if protocol == "ws":
        return WebSocketTransport(endpoint, api_key=api_key, tls_ca=tls_ca)
    if protocol == "grpc":
        return GrpcTransport(endpoint, api_key=api_key, tls_ca=tls_ca)
    raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


class AsyncClient:
    """``AsyncClient(["http://a:8000", "http://b:8000"], protocol="http")``; gRPC endpoints
    are ``host:port`` of the gateway's ``--grpc-port`` (``grpcs://host:port`` with TLS).
    ``tls_ca``: a PEM file to trust (a gateway's self-signed certificate). ``jobs_url``: the
    gateway's HTTP endpoint(s) for ``client.jobs`` (default: the endpoints, unless they are
    gRPC addresses). Use as ``async with``."""

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
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("give at least one endpoint, e.g. 'http://127.0.0.1:8000'")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.transports = [_transport(protocol, url, api_key, tls_ca) for url in urls]
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.headers = dict(headers or {})
        self._current = 0  # the endpoint that last answered: tried first
        self._sleep, self._rand = sleep, rand
        # Jobs go over HTTP: the endpoints themselves unless they are gRPC addresses.
        if jobs_url is None and protocol != "grpc":
            jobs_url = urls
        jobs_urls = [jobs_url] if isinstance(jobs_url, str) else list(jobs_url or [])
        self._jobs_urls, self._api_key, self._tls_ca = jobs_urls, api_key, tls_ca
        self._jobs: AsyncJobs | None = None

    @property
    def jobs(self) -> AsyncJobs:
        """Async requests and batches (``client.jobs``), over the gateway's HTTP API."""
        if self._jobs is None:
            if not self._jobs_urls:
                raise ValueError(
                    "jobs go over HTTP and gRPC endpoints are not HTTP URLs: pass "
                    "jobs_url='http://host:port' (the gateway's HTTP port)"
                )
            self._jobs = AsyncJobs(
                self._jobs_urls,
                api_key=self._api_key,
                headers=self.headers,
                timeout_s=self.timeout_s,
                max_retries=self.retry.max_retries,
                delay_s=lambda retry, after: self.retry.delay_s(retry, after, self._rand),
                tls_ca=self._tls_ca,
                sleep=self._sleep,
            )
        return self._jobs

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(t.aclose() for t in self.transports))
        if self._jobs is not None:
            await self._jobs.aclose()

    # ----- the interface --------------------------------------------------------------------
    async def chat(self, **body: Any) -> dict[str, Any]:
        """A chat completion (OpenAI's fields as keywords); the answer as OpenAI's JSON."""
        return await self._unary("chat", body)

    def chat_stream(self, **body: Any) -> AsyncIterator[dict[str, Any]]:
        """A streamed chat completion: each chunk as OpenAI's JSON."""
        return self._stream("chat", body)

    async def complete(self, **body: Any) -> dict[str, Any]:
        """A (text) completion."""
        return await self._unary("completion", body)

    def complete_stream(self, **body: Any) -> AsyncIterator[dict[str, Any]]:
        return self._stream("completion", body)

    # ----- the retry loop -------------------------------------------------------------------
    def _split(
        self, body: dict[str, Any], stream: bool
    ) -> tuple[dict[str, Any], dict[str, str], float]:
        """The OpenAI body and this call's headers and timeout (``extra_headers``,
        ``idempotency_key`` and ``timeout_s`` are client options, not body fields)."""
        body = dict(body)
        headers = {**self.headers, **(body.pop("extra_headers", None) or {})}
        key = body.pop("idempotency_key", None) or f"shipit-{uuid.uuid4().hex}"
        headers["idempotency-key"] = key
        timeout_s = float(body.pop("timeout_s", None) or self.timeout_s)
        body["stream"] = stream
        return body, headers, timeout_s

    async def _unary(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        body, headers, timeout_s = self._split(body, stream=False)
        async with aclosing(self._attempts(kind, body, headers, timeout_s)) as attempts:
            async for answer in attempts:
                return answer
        raise ShipitClientError("the server ended the call without an answer")

    async def _stream(self, kind: Kind, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        body, headers, timeout_s = self._split(body, stream=True)
        async with aclosing(self._attempts(kind, body, headers, timeout_s)) as attempts:
            async for chunk in attempts:
                yield chunk

    async def _attempts(
        self, kind: Kind, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        n = len(self.transports)
        tried: set[int] = set()
        index = self._current
        retries = 0
        while True:
            tried.add(index)
            started = False
            try:
                calls = self.transports[index].call(kind, body, headers, timeout_s)
                try:
                    async for item in calls:
                        if not started:
                            started = True
                            self._current = index  # it answers: tried first next time
                        yield item
                finally:
                    await calls.aclose()  # type: ignore[attr-defined]
                return
            except ShipitClientError as exc:
                if started or not retryable(exc) or retries >= self.retry.max_retries:
                    raise
                retries += 1
                nxt = (index + 1) % n
                if nxt not in tried:
                    index = nxt  # another endpoint not yet tried: at once
                    continue
                index = nxt
                after = exc.retry_after_s if isinstance(exc, APIError) else None
                await self._sleep(self.retry.delay_s(retries - 1, after, self._rand))
