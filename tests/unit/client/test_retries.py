"""``AsyncClient``'s retry loop against scripted transports: failover to an endpoint not yet
tried at once, backoff once every endpoint failed, never shorter than Retry-After, no retry of
a client error, no replay of a stream that has begun, one idempotency key per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shipit.client import APIConnectionError, APIError, AsyncClient, RetryPolicy
from shipit.client.errors import parse_retry_after, retryable


class Scripted:
    """A transport whose calls play ``script``: an exception, or a list of items (an
    exception inside the list is raised after the items before it)."""

    def __init__(self, endpoint: str, script: list[Any]) -> None:
        self.endpoint = endpoint
        self.script = script
        self.headers: list[dict[str, str]] = []

    async def call(
        self, kind: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> AsyncIterator[dict[str, Any]]:
        self.headers.append(headers)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        for item in step:
            if isinstance(item, Exception):
                raise item
            yield item

    async def aclose(self) -> None:
        pass


def client(*scripts: list[Any], **kw: Any) -> tuple[AsyncClient, list[Scripted], list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    c = AsyncClient(
        [f"http://e{i}" for i in range(len(scripts))],
        sleep=sleep,
        rand=lambda: 1.0,
        **kw,
    )
    fakes = [Scripted(f"http://e{i}", list(s)) for i, s in enumerate(scripts)]
    c.transports = fakes  # type: ignore[assignment]
    return c, fakes, slept


OK = [{"ok": 1}]
DOWN = APIConnectionError("refused")


def test_a_dead_endpoint_fails_over_at_once_and_the_live_one_is_kept() -> None:
    c, (e0, e1), slept = client([DOWN], [OK, OK])

    async def go() -> None:
        assert await c.chat(model="m") == {"ok": 1}
        assert await c.chat(model="m") == {"ok": 1}  # straight to e1 now

    asyncio.run(go())
    assert slept == [] and len(e0.headers) == 1 and len(e1.headers) == 2


def test_backoff_once_every_endpoint_failed_then_success() -> None:
    busy = APIError(503, "busy")
    c, (e0, e1), slept = client(
        [busy, busy, OK], [busy, busy], retry=RetryPolicy(max_retries=4, base_s=0.5, max_s=0.75)
    )
    assert asyncio.run(c.chat(model="m")) == {"ok": 1}
    # e0 fails, e1 at once; e0 after 0.5*2 = 1.0 capped at 0.75; e1 after 0.75; e0 after 0.75.
    assert slept == [0.75, 0.75, 0.75]
    keys = {h["idempotency-key"] for h in e0.headers + e1.headers}
    assert len(keys) == 1 and next(iter(keys)).startswith("shipit-")


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    c, _, slept = client([APIError(429, "slow down", retry_after_s=5.0), OK])
    assert asyncio.run(c.chat(model="m", idempotency_key="k1")) == {"ok": 1}
    assert slept == [5.0]


def test_client_errors_are_not_retried_and_retries_run_out() -> None:
    c, (e0,), slept = client([APIError(400, "bad"), OK])
    with pytest.raises(APIError) as err:
        asyncio.run(c.chat(model="m"))
    assert err.value.status == 400 and slept == [] and len(e0.script) == 1

    c, (e0,), slept = client([DOWN, DOWN, DOWN], retry=RetryPolicy(max_retries=2, base_s=1))
    with pytest.raises(APIConnectionError):
        asyncio.run(c.chat(model="m"))
    assert slept == [1.0, 2.0] and e0.script == []


def test_a_stream_is_not_replayed_once_it_has_begun() -> None:
    c, (e0,), _ = client([[{"n": 0}, APIConnectionError("reset")], [{"n": 0}, {"n": 1}]])

    async def go() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        with pytest.raises(APIConnectionError):
            async for chunk in c.chat_stream(model="m"):
                got.append(chunk)
        return got

    assert asyncio.run(go()) == [{"n": 0}]
    assert len(e0.script) == 1  # the second script never ran


def test_options_are_not_sent_as_body_fields() -> None:
    seen: list[dict[str, Any]] = []
    c, (e0,), _ = client([OK], headers={"x-shipit-priority": "2"})

    async def call(kind: str, body: dict[str, Any], headers: dict[str, str], t: float) -> Any:
        seen.append({"body": body, "headers": headers, "timeout": t})
        yield {"ok": 1}

    e0.call = call  # type: ignore[method-assign]
    asyncio.run(
        c.chat(model="m", idempotency_key="k", timeout_s=3, extra_headers={"x-request-id": "r"})
    )
    assert seen == [
        {
            "body": {"model": "m", "stream": False},
            "headers": {"x-shipit-priority": "2", "x-request-id": "r", "idempotency-key": "k"},
            "timeout": 3.0,
        }
    ]


def test_error_helpers() -> None:
    assert retryable(APIError(429, "x")) and retryable(APIError(502, "x"))
    assert not retryable(APIError(501, "x")) and not retryable(APIError(404, "x"))
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None
    assert parse_retry_after(None) is None and parse_retry_after("-1") is None
    with pytest.raises(ValueError, match="protocol 'udp'"):
        AsyncClient("http://x", protocol="udp")  # type: ignore[arg-type]
