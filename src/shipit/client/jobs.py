"""``AsyncJobs``: work that can wait, through a gateway's HTTP job API, for any client protocol.

Single async requests (``submit``, ``get``, ``wait``, ``result``, ``cancel``) and OpenAI batches
(``create_batch`` uploads the JSONL and creates the batch; ``batch``, ``wait_batch``,
``cancel_batch``, ``batch_results``). Jobs always travel over HTTP, whatever protocol the client
streams with: ``AsyncClient(..., protocol="grpc", jobs_url="http://gw:8000")``.

Retries follow the client's ``RetryPolicy`` and endpoint failover: reads and ``submit`` (which
sends one ``Idempotency-Key`` on every attempt, so the gateway queues it once) are retried on
connection errors, timeouts, 408, 429 and 5xx; uploads, batch creation and cancels only when
the connection could not be made (nothing was sent), since the gateway would act twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import httpx

from shipit.client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ShipitClientError,
    parse_retry_after,
    retryable,
)

Kind = Literal["chat", "completion"]
_SUBMIT = {"chat": "/v1/async/chat/completions", "completion": "/v1/async/completions"}
FINAL_BATCH = ("completed", "failed", "expired", "cancelled")
FINAL_REQUEST = ("completed", "failed", "cancelled")


class AsyncJobs:
    def __init__(
        self,
        base_urls: list[str],
        *,
        api_key: str | None,
        headers: dict[str, str],
        timeout_s: float,
        max_retries: int,
        delay_s: Callable[[int, float | None], float],
        tls_ca: str | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if not base_urls:
            raise ValueError("give at least one HTTP endpoint for jobs")
        for url in base_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"jobs go over HTTP; {url!r} is not an http(s):// URL (with protocol='grpc', "
                    "pass jobs_url='http://host:port' of the gateway's HTTP port)"
                )
        self.base_urls = [u.rstrip("/").removesuffix("/v1") for u in base_urls]
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            headers={**headers, **auth},
            timeout=timeout_s,
            verify=tls_ca or True,
            limits=httpx.Limits(max_keepalive_connections=10),
        )
        self._max_retries, self._delay_s, self._sleep = max_retries, delay_s, sleep
        self._current = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----- single async requests ------------------------------------------------------------
    async def submit(
        self,
        *,
        kind: Kind = "chat",
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        **body: Any,
    ) -> dict[str, Any]:
        """Queue one request (OpenAI's fields as keywords); its status object (``id``)."""
        if kind not in _SUBMIT:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(_SUBMIT)}")
        headers = {"idempotency-key": idempotency_key or f"shipit-{uuid.uuid4().hex}"}
        if webhook_url:
            headers["x-shipit-webhook-url"] = webhook_url
        out: dict[str, Any] = await self._call(
            "POST", _SUBMIT[kind], json=body, headers=headers, safe=True
        )
        return out

    async def get(self, request_id: str) -> dict[str, Any]:
        """Status (``queued``, ``in_progress``, ``completed``, ``failed``, ``cancelled``), and
        the ``response`` once done."""
        out: dict[str, Any] = await self._call("GET", f"/v1/async/{request_id}", safe=True)
        return out

    async def result(self, request_id: str) -> dict[str, Any]:
        """The answer as the replica gave it; ``APIError`` 409 while it is not finished."""
        out: dict[str, Any] = await self._call("GET", f"/v1/async/{request_id}/result", safe=True)
        return out

    async def cancel(self, request_id: str) -> dict[str, Any]:
        """Cancel a queued request (one already running finishes)."""
        out: dict[str, Any] = await self._call("POST", f"/v1/async/{request_id}/cancel")
        return out

    async def wait(
        self, request_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Poll until the request is finished; its last status."""
        return await self._poll(lambda: self.get(request_id), FINAL_REQUEST, poll_s, timeout_s)

    # ----- batches ----------------------------------------------------------------------------
    async def create_batch(
        self,
        requests: Iterable[dict[str, Any]] | str | Path,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Upload ``requests`` (a JSONL file, or lines as dicts in OpenAI's batch format:
        ``custom_id``, ``method``, ``url``, ``body``) and start a batch; the batch object."""
        if isinstance(requests, str | Path):
            path = Path(requests)
            if not path.is_file():
                raise ValueError(f"{path} is not a file; give a JSONL file or a list of lines")
            content, name = path.read_bytes(), path.name
        else:
            content = b"".join(json.dumps(line).encode() + b"\n" for line in requests)
            name = "batch.jsonl"
        if not content.strip():
            raise ValueError("the batch has no lines; give at least one request")
        files = {"file": (name, content, "application/jsonl")}
        up = await self._call("POST", "/v1/files", files=files, data={"purpose": "batch"})
        body: dict[str, Any] = {
            "input_file_id": up["id"],
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = metadata
        out: dict[str, Any] = await self._call("POST", "/v1/batches", json=body)
        return out

    async def batch(self, batch_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._call("GET", f"/v1/batches/{batch_id}", safe=True)
        return out

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self._call("POST", f"/v1/batches/{batch_id}/cancel")
        return out

    async def wait_batch(
        self, batch_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Poll until the batch is completed, failed, expired or cancelled."""
        return await self._poll(lambda: self.batch(batch_id), FINAL_BATCH, poll_s, timeout_s)

    async def batch_results(self, batch_id: str, *, errors: bool = False) -> list[dict[str, Any]]:
        """The output file's lines (``errors``: the error file's), one per answered line."""
        b = await self.batch(batch_id)
        file_id = b.get("error_file_id" if errors else "output_file_id")
        if not file_id:
            what = "error" if errors else "output"
            raise ShipitClientError(f"batch {batch_id} ({b.get('status')}) has no {what} file yet")
        raw = await self._call("GET", f"/v1/files/{file_id}/content", safe=True, raw=True)
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    # ----- plumbing ---------------------------------------------------------------------------
    async def _poll(
        self,
        fetch: Callable[[], Any],
        final: tuple[str, ...],
        poll_s: float,
        timeout_s: float | None,
    ) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status: dict[str, Any] = await fetch()
            if status.get("status") in final:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise APITimeoutError(
                    f"{status.get('id')} still {status.get('status')} after {timeout_s:g}s"
                )
            await self._sleep(poll_s)

    async def _call(
        self, method: str, path: str, *, safe: bool = False, raw: bool = False, **kw: Any
    ) -> Any:
        """One call with retries and failover; ``safe``: repeating it cannot do harm."""
        n, index, tried, retries = len(self.base_urls), self._current, set[int](), 0
        while True:
            tried.add(index)
            base = self.base_urls[index]
            try:
                resp = await self._http.request(method, base + path, **kw)
                if resp.status_code >= 400:
                    raise _api_error(resp, base)
                self._current = index
                return resp.content if raw else resp.json()
            except httpx.ConnectError as exc:
                error: ShipitClientError = APIConnectionError(str(exc), endpoint=base)
                sent = False
            except httpx.TimeoutException as exc:
                error, sent = APITimeoutError(str(exc) or "timed out", endpoint=base), True
            except httpx.TransportError as exc:
                error, sent = APIConnectionError(str(exc), endpoint=base), True
            except APIError as exc:
                error, sent = exc, True
            if (sent and not safe) or not retryable(error) or retries >= self._max_retries:
                raise error
            retries += 1
            index = (index + 1) % n
            if index not in tried:
                continue  # another endpoint not yet tried: at once
            after = error.retry_after_s if isinstance(error, APIError) else None
            await self._sleep(self._delay_s(retries - 1, after))


def _api_error(resp: httpx.Response, endpoint: str) -> APIError:
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:500]
    return APIError(
        resp.status_code,
        str(message),
        retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
        endpoint=endpoint,
    )
