"""The hot path: send one streamed completion over HTTP/1.1 and time every content chunk.

Owns request bodies, the SSE parse and the error taxonomy. The ``Sender`` protocol is the IO
seam: ``HttpSender`` is the real one (httpx, pooled keep-alive connections); tests drive it
with ``httpx.MockTransport`` or a fake server. The per-chunk loop only takes one clock reading
per network read, parses JSON and appends an integer; it must not log, format or allocate
anything it does not keep.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Protocol

import httpx
import tokenizers

from shipit.bench.config import TargetConfig
from shipit.bench.records import RequestRecord, Turn


@dataclass(frozen=True, slots=True)
class Outcome:
    record: RequestRecord
    text: str  # the reply, kept only when a later turn needs it


class Sender(Protocol):
    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome: ...


def build_body(
    target: TargetConfig,
    model: str,
    history: list[dict[str, str]],
    current: Turn,
    *,
    stream: bool = True,
) -> bytes:
    """The JSON body of one request (streamed unless ``stream`` is False); ``history`` holds
    earlier turns of the session."""
    body: dict[str, Any] = {"model": model, "max_tokens": current.max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if target.endpoint == "chat":
        body["messages"] = [*history, {"role": "user", "content": current.prompt}]
    else:
        body["prompt"] = "\n".join([*(m["content"] for m in history), current.prompt])
    if target.ignore_eos:
        body["ignore_eos"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "disconnect"
    if isinstance(exc, ValueError):  # json.JSONDecodeError and friends
        return "bad_chunk"
    return type(exc).__name__


@dataclass(slots=True)
class StreamState:
    """Mutable scratch of one stream; lives only inside ``HttpSender.send``."""

    content_ns: list[int]
    usage: dict[str, Any] | None = None
    done: bool = False
    stream_error: str | None = None
    text: list[str] | None = None


def _parse_lines(lines: list[bytes], now: int, st: StreamState) -> None:
    for line in lines:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            st.done = True
            continue
        take_chunk(json.loads(payload), now, st)


def take_chunk(obj: dict[str, Any], now: int, st: StreamState) -> None:
    """One stream chunk (an OpenAI JSON object), however it arrived."""
    choices = obj.get("choices")
    if choices:
        c0 = choices[0]
        delta = c0.get("delta")
        message = c0.get("message")  # a whole answer (no stream): its content at once
        piece = (
            (delta.get("content") or delta.get("reasoning_content"))
            if delta
            else (message.get("content") if message else c0.get("text"))
        )
        if piece:
            st.content_ns.append(now)
            if st.text is not None:
                st.text.append(piece)
    usage = obj.get("usage")
    if usage:
        st.usage = usage
    if "error" in obj:
        st.stream_error = str(obj["error"])[:200]


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
    """A Hugging Face ``tokenizer.json``, or a model directory that holds one."""
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise ValueError(
            f"--tokenizer {path!r}: no tokenizer.json there; give the file or a model "
            "directory that holds one"
        )
    return tokenizers.Tokenizer.from_file(str(file))


class HttpSender:
    """Sends requests over connections from a ``ClientPool`` owned by the caller."""

    def __init__(self, pool: ClientPool, target: TargetConfig) -> None:
        self._pool = pool
        self._target = target
        self._url = target.endpoint_url()
        self._tokenizer = load_tokenizer(target.tokenizer) if target.tokenizer else None
        self._headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if target.api_key:
            self._headers["authorization"] = f"Bearer {target.api_key}"

    async def send(
        self,
        *,
        session: int,
        turn: int,
        model: str,
        history: list[dict[str, str]],
        current: Turn,
        scheduled_ns: int | None,
        keep_text: bool,
    ) -> Outcome:
        body = build_body(self._target, model, history, current)
        client = self._pool.acquire()
        request = client.build_request("POST", self._url, content=body, headers=self._headers)
        # With a tokenizer the text is kept too: it counts tokens when usage is missing.
        keep = keep_text or self._tokenizer is not None
        st = StreamState(content_ns=[], text=[] if keep else None)
        error: str | None = None
        detail: str | None = None
        start_ns = perf_counter_ns()
        try:
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    error = f"http_{response.status_code}"
                    detail = (await response.aread()).decode(errors="replace")[:200]
                else:
                    buf = b""
                    async for raw in response.aiter_raw():
                        now = perf_counter_ns()
                        lines = (buf + raw).split(b"\n")
                        buf = lines.pop()
                        _parse_lines(lines, now, st)
                    if buf:
                        _parse_lines([buf], perf_counter_ns(), st)
            finally:
                await response.aclose()
        except (httpx.HTTPError, ValueError) as exc:
            error, detail = _error_kind(exc), str(exc)[:200] or type(exc).__name__
        end_ns = perf_counter_ns()
        self._pool.release(client)
        text = "".join(st.text or ())
        record = self._record(
            session, turn, model, current, scheduled_ns, start_ns, end_ns, st, error, detail
        )
        if record.tokens_source == "chunks" and self._tokenizer is not None:
            n = len(self._tokenizer.encode(text, add_special_tokens=False).ids)
            record = dataclasses.replace(record, output_tokens=n, tokens_source="tokenizer")
        return Outcome(record, text)

    @staticmethod
    def _record(
        session: int,
        turn: int,
        model: str,
        current: Turn,
        scheduled_ns: int | None,
        start_ns: int,
        end_ns: int,
        st: StreamState,
        error: str | None,
        detail: str | None,
    ) -> RequestRecord:
        if error is None and st.stream_error is not None:
            error, detail = "stream_error", st.stream_error
        elif error is None and not st.done:
            error, detail = "incomplete", "the stream ended without data: [DONE]"
        elif error is None and not st.content_ns:
            error, detail = "no_content", "the stream carried no content"
        usage = st.usage or {}
        completion = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        return RequestRecord(
            session=session,
            turn=turn,
            model=model,
            scheduled_ns=scheduled_ns,
            start_ns=start_ns,
            end_ns=end_ns,
            content_ns=tuple(st.content_ns),
            input_tokens=int(prompt) if isinstance(prompt, int) else current.input_tokens,
            output_tokens=int(completion) if isinstance(completion, int) else len(st.content_ns),
            tokens_source="usage" if isinstance(completion, int) else "chunks",
            error=error,
            error_detail=detail,
        )


class ClientPool:
    """Keep-alive HTTP/1.1 connections as a free list of one-connection httpx clients.

    Why not one client with a big pool: httpcore scans every pooled connection on each request
    (O(connections) per request), which capped us at ~50 concurrent streams per core. A request
    here takes an idle client (or makes one) and gives it back: O(1), never waits for a free
    connection (that would inflate TTFT in an open loop), and every client shares one SSL context.
    """

    def __init__(
        self, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._transport = transport  # tests pass httpx.MockTransport
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))
        self._ssl = httpx.create_ssl_context()
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    def acquire(self) -> httpx.AsyncClient:
        if self._idle:
            return self._idle.pop()
        client = httpx.AsyncClient(
            http2=False,
            verify=self._ssl,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            transport=self._transport,
        )
        self._all.append(client)
        return client

    def release(self, client: httpx.AsyncClient) -> None:
        self._idle.append(client)

    @property
    def size(self) -> int:
        return len(self._all)

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()
        self._all.clear()
        self._idle.clear()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


make_record = HttpSender._record  # shared by the senders of other protocols (bench.senders)
