"""The SSE hot path through httpx.MockTransport: timing hooks, token counts, error kinds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shipit.bench.client import ClientPool, HttpSender, Outcome, build_body
from shipit.bench.config import TargetConfig
from shipit.bench.records import Turn

TARGET = TargetConfig(url="http://bench.test", model="m", api_key="sk-test")


def sse(*objs: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {o if isinstance(o, str) else json.dumps(o)}\n\n".encode() for o in objs]


def content(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


class Body(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part


def send(
    parts: list[bytes] | None = None,
    *,
    status: int = 200,
    raise_exc: Exception | None = None,
    keep_text: bool = False,
    target: TargetConfig = TARGET,
) -> tuple[Outcome, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if raise_exc is not None:
            raise raise_exc
        return httpx.Response(status, stream=Body(parts or []))

    async def go() -> Outcome:
        async with ClientPool(timeout_s=5, transport=httpx.MockTransport(handler)) as pool:
            return await HttpSender(pool, target).send(
                session=3,
                turn=0,
                model="m",
                history=[],
                current=Turn("hi there", 2, 8),
                scheduled_ns=None,
                keep_text=keep_text,
            )

    return asyncio.run(go()), seen


def test_counts_content_chunks_and_prefers_server_usage() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}}
    parts = sse(role, content("a"), content("b"), content("c"), usage, "[DONE]")
    out, seen = send(parts, keep_text=True)
    r = out.record
    assert r.ok and len(r.content_ns) == 3  # the role-only chunk is not a token
    assert (r.output_tokens, r.input_tokens, r.tokens_source) == (5, 11, "usage")
    assert out.text == "abc"
    assert r.start_ns <= r.content_ns[0] <= r.content_ns[-1] <= r.end_ns
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hi there"}]
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert str(seen[0].url) == "http://bench.test/v1/chat/completions"


def test_events_split_across_reads_are_reassembled() -> None:
    raw = b"".join(sse(content("x"), content("y"), "[DONE]"))
    parts = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    out, _ = send(parts)
    assert out.record.ok and len(out.record.content_ns) == 2
    assert (out.record.output_tokens, out.record.tokens_source) == (2, "chunks")
    assert out.record.input_tokens == 2  # no usage: what the workload asked for


def test_completions_endpoint_reads_text() -> None:
    target = TargetConfig(url="http://bench.test/v1", model="m", endpoint="completions")
    parts = sse({"choices": [{"index": 0, "text": "t"}]}, "[DONE]")
    out, seen = send(parts, target=target)
    assert out.record.ok and out.record.output_tokens == 1
    assert json.loads(seen[0].content)["prompt"] == "hi there"
    assert str(seen[0].url) == "http://bench.test/v1/completions"


@pytest.mark.parametrize(
    ("parts", "status", "exc", "kind"),
    [
        (sse(content("a")), 200, None, "incomplete"),
        (sse("[DONE]"), 200, None, "no_content"),
        ([b'{"error": "busy"}'], 429, None, "http_429"),
        (sse({"error": {"message": "oom"}}, "[DONE]"), 200, None, "stream_error"),
        (None, 200, httpx.ConnectError("refused"), "connect"),
        (None, 200, httpx.ReadTimeout("slow"), "timeout"),
        (None, 200, httpx.RemoteProtocolError("cut"), "disconnect"),
        ([b"data: {not json\n\n"], 200, None, "bad_chunk"),
    ],
)
def test_errors_have_kinds(
    parts: list[bytes] | None, status: int, exc: Exception | None, kind: str
) -> None:
    out, _ = send(parts, status=status, raise_exc=exc)
    assert out.record.error == kind
    assert out.record.error_detail


def test_body_options() -> None:
    target = TargetConfig(url="u", model="m", ignore_eos=True)
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    body = json.loads(build_body(target, "lora-a", history, Turn("next", 1, 4)))
    assert body["model"] == "lora-a" and body["ignore_eos"] is True and body["max_tokens"] == 4
    assert body["messages"][-1] == {"role": "user", "content": "next"}
    assert body["messages"][:2] == history


def test_pool_reuses_idle_clients() -> None:
    async def go() -> int:
        async with ClientPool(timeout_s=1) as pool:
            a = pool.acquire()
            pool.release(a)
            assert pool.acquire() is a
            pool.acquire()
            return pool.size

    assert asyncio.run(go()) == 2
