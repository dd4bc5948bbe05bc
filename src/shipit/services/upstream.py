"""The HTTP seam between shipit and replicas: an ``Upstream`` protocol and its aiohttp client.

Owns opening a streamed upstream request (``open``: connect, send, wait for the status line
under a first-byte timeout, then hand back an iterator of body chunks exactly as they arrive)
and small JSON calls for the control path (``get``, ``post_json``, which carry the replicas'
admin token when one is given). Failures before the first byte are ``UpstreamError`` with a
``kind`` ("connect", "timeout", "protocol") so the caller can decide to retry. It must not
route, retry or know about deployments; ``upstream_fake`` holds the in-process fake for tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import aiohttp

from shipit.core.urls import redact_url

if TYPE_CHECKING:
    from shipit.services.upstream_h1 import H1Pool


class UpstreamError(Exception):
    """Nothing usable came back: ``kind`` is "connect", "timeout" or "protocol"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class MidStreamError(Exception):
    """The upstream failed after its response had started."""


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises ``MidStreamError`` if the upstream breaks."""
        ...

    def close(self) -> None:
        """Abort: close the connection so the replica sees the client leave."""
        ...

    def release(self) -> None:
        """The body was read to the end: return the connection to the pool."""
        ...


async def relay(
    resp: UpstreamResponse,
    deliver: Callable[[bytes], bool],
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Every body chunk of ``resp`` to ``deliver``, in order, until the body ends (raises
    ``MidStreamError`` as ``chunks`` does). ``deliver`` must not block; it returns True when
    its consumer is behind, and no more is read until ``drain`` returns. A response with a
    ``relay`` of its own (the pooled HTTP/1.1 client's) calls ``deliver`` from its read
    callback, with no task switch per chunk; any other is iterated."""
    own = getattr(resp, "relay", None)
    if own is not None:
        await own(deliver, drain)
        return
    async for chunk in resp.chunks():
        if deliver(chunk):
            await drain()


class Upstream(Protocol):
    def open(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        first_byte_timeout_s: float,
    ) -> Awaitable[UpstreamResponse]:
        """The response once its head came, to await at once (an ``async def`` does). An
        upstream may write the request before it is awaited, when it can without waiting."""
        ...

    async def get(
        self, url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]: ...

    async def post_json(
        self,
        url: str,
        payload: object,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise MidStreamError(redact_url(f"{type(exc).__name__}: {exc}")) from exc

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """One pooled aiohttp session; build it inside a running loop (a lifespan)."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 300.0,
        limit: int = 0,
        control_headers: Mapping[str, str] | None = None,
        h1: bool = True,
    ) -> None:
        # Sent on the control calls (``get``, ``post_json``) only, never on proxied requests:
        # the replicas' admin token (``Authorization: Bearer ...``). A call's own headers (a
        # replica's upstream credential) win over them.
        self._control_headers = dict(control_headers or {})
        # Proxied requests to http:// replicas go through the pooled HTTP/1.1 client
        # (``upstream_h1``); https:// ones and the control calls through aiohttp.
        self._h1: H1Pool | None = None
        if h1:
            from shipit.services.upstream_h1 import H1Pool

            self._h1 = H1Pool(connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=30.0),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    def open(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        first_byte_timeout_s: float,
    ) -> Awaitable[UpstreamResponse]:
        """Plain HTTP: the pooled client's own awaitable, returned to await (no frame of this
        one between the request and its wait for the replica; the request is written at once
        when a kept-alive connection is idle); HTTPS through aiohttp."""
        if self._h1 is not None and url.startswith("http://"):
            return self._h1.open(url, body, headers, first_byte_timeout_s=first_byte_timeout_s)
        return self._open_aiohttp(url, body, headers, first_byte_timeout_s)

    async def _open_aiohttp(
        self, url: str, body: bytes, headers: Mapping[str, str], first_byte_timeout_s: float
    ) -> UpstreamResponse:
        try:
            async with asyncio.timeout(first_byte_timeout_s):
                resp = await self._session.post(url, data=body, headers=headers)
        except TimeoutError as exc:
            raise UpstreamError("timeout", f"no response in {first_byte_timeout_s:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("connect", f"cannot connect: {exc.os_error}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("protocol", redact_url(f"{type(exc).__name__}: {exc}")) from exc
        return _AiohttpResponse(resp)

    async def get(
        self, url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        return await self._call("GET", url, None, timeout_s, headers)

    async def post_json(
        self,
        url: str,
        payload: object,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        return await self._call("POST", url, payload, timeout_s, headers)

    async def _call(
        self,
        method: str,
        url: str,
        payload: object,
        timeout_s: float,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, bytes]:
        shown = redact_url(url)  # the message may be logged
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.request(
                    method, url, json=payload, headers={**self._control_headers, **(headers or {})}
                ) as resp:
                    return resp.status, await resp.read()
        except TimeoutError as exc:
            why = f"{method} {shown}: no answer in {timeout_s:g}s"
            raise UpstreamError("timeout", why) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError("connect", f"{method} {shown}: {exc.os_error}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("protocol", f"{method} {shown}: {redact_url(str(exc))}") from exc

    async def close(self) -> None:
        if self._h1 is not None:
            await self._h1.close()
        await self._session.close()
