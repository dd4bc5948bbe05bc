"""A fake OpenAI-compatible streaming server with known, injected timing, for bench tests.

Owns a raw ASGI app (no framework: its own overhead must stay far below the delays it injects)
and ``serve``, which runs it under uvicorn on 127.0.0.1, port 0, in a child process. It sends
a role-only chunk at once (as vLLM does), waits ``ttft_s``, then sends one token per chunk
``itl_s`` apart, a usage chunk when the client asks for ``stream_options.include_usage``, and
``data: [DONE]``. It must never be imported by ``src/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

Scope = dict[str, Any]


@dataclass
class FakeTiming:
    ttft_s: float = 0.0
    itl_s: float = 0.0
    output_tokens: int | None = None  # None: honour the request's max_tokens
    send_usage: bool = True  # False: ignore include_usage, like an old server
    fail_every: int = 0  # every Nth request answers HTTP 500 (0: never)
    api_key: str | None = None  # set: every request must carry "Authorization: Bearer <it>"


@dataclass
class FakeOpenAI:
    timing: FakeTiming = field(default_factory=FakeTiming)
    received: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/_received":
            await _send_plain(send, 200, json.dumps(self.received).encode())
            return
        if self.timing.api_key is not None:
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {self.timing.api_key}".encode():
                await _send_plain(send, 401, b'{"error": {"message": "Unauthorized"}}')
                return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body or b"{}")
        self.received.append(request)
        n = len(self.received)
        if self.timing.fail_every and n % self.timing.fail_every == 0:
            await _send_plain(send, 500, b'{"error": {"message": "injected failure"}}')
            return
        if not scope["path"].endswith("completions"):
            await _send_plain(send, 404, b'{"error": {"message": "not found"}}')
            return
        await self._stream(request, scope["path"].endswith("chat/completions"), send)

    async def _stream(self, request: dict[str, Any], chat: bool, send: Any) -> None:
        t = self.timing
        tokens = (
            t.output_tokens if t.output_tokens is not None else int(request.get("max_tokens", 16))
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if chat:
            await _event(
                send, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            )
        for i in range(tokens):
            await asyncio.sleep(t.ttft_s if i == 0 else t.itl_s)
            piece = f" tok{i}"
            choice = (
                {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            )
            await _event(send, {"choices": [choice]})
        if t.send_usage and (request.get("stream_options") or {}).get("include_usage"):
            prompt = request.get("messages") or request.get("prompt") or ""
            usage = {
                "prompt_tokens": len(json.dumps(prompt).split()),
                "completion_tokens": tokens,
                "total_tokens": tokens,
            }
            await _event(send, {"choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _event(send: Any, obj: dict[str, Any]) -> None:
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _run_child(timing_json: str) -> None:
    """Entry point of the server process: serve, print the port, run until killed."""
    fake = FakeOpenAI(FakeTiming(**json.loads(timing_json)))
    config = uvicorn.Config(
        fake,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        ws="none",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                return
            await asyncio.sleep(0.01)
        print(server.servers[0].sockets[0].getsockname()[1], flush=True)
        await task

    asyncio.run(main())


@contextmanager
def serve(timing: FakeTiming) -> Iterator[str]:
    """Run a fake server in its own process (so its work never steals the test's GIL);
    yields its base URL. ``GET /_received`` returns the request bodies it saw."""
    code = "import sys; from support.fake_openai import _run_child; _run_child(sys.argv[1])"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(asdict(timing))],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the fake OpenAI server did not start (printed {line!r})")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def received(base_url: str) -> list[dict[str, Any]]:
    """The request bodies a fake server started by ``serve`` has seen, in order."""
    with urllib.request.urlopen(base_url + "/_received", timeout=10) as resp:
        data: list[dict[str, Any]] = json.loads(resp.read())
    return data
