"""Drive an ASGI app in-process: one HTTP request, the messages it sent back, and a client
that can leave mid-response. For gateway unit tests; no sockets."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
    disconnect: asyncio.Event | None = None,
) -> Result:
    raw = (
        json.dumps(body).encode()
        if body is not None and not isinstance(body, bytes)
        else (body or b"")
    )
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent_body = False
    gone = disconnect or asyncio.Event()
    result = Result()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            if message.get("body"):
                result.chunks.append(message["body"])
            if not message.get("more_body"):
                result.complete = True
                gone.set()

    await app(scope, receive, send)
    return result
