"""Reading an SSE byte stream: the ``data:`` payloads of its events, however the bytes arrive.

Front doors that are not HTTP/SSE (WebSocket, gRPC) get the replica's answer as raw chunks from
the request core; ``SSEData.feed`` turns those into whole event payloads (one JSON object each
for an OpenAI stream), skipping comments and the final ``[DONE]``. It must not parse JSON.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEData:
    """Feed chunks in arrival order; each call returns the payloads completed by that chunk."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._rest + chunk if self._rest else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._rest = events.pop()
        out: list[bytes] = []
        for event in events:
            parts: list[bytes] = []
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:]
                    parts.append(value[1:] if value[:1] == b" " else value)
            if parts:
                payload = b"\n".join(parts)
                if payload != DONE:
                    out.append(payload)
        return out
