"""Per-request accounting on the proxy's hot path: latencies, tokens and goodput of one answer.

Owns what the gateway learns from the bytes it relays without parsing the stream: TTFT (the
first chunk that is not a chat stream's role-only event), the gap between successive chunks
(ITL, pooled), the SSE event count, and the ``usage`` object (OpenAI's final usage chunk of a
stream, present when the client asked for ``stream_options.include_usage``, or the usage of a
non-streamed body). Per chunk it does one clock read, a ``count`` and a substring test; JSON
is parsed once, after the last byte, and only for the chunk that carries the usage. When no
usage came back, output tokens are the stream's content events (one token per event, as vLLM
streams) and prompt tokens are not counted. The usage's ``prompt_tokens_details.cached_tokens``
(the prefix the replica found in its cache) is kept for checking prefix-cache routing's
prediction (``prefix_blocks``). It must not change a byte of the answer.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from shipit.config.observability import SloConfig
from shipit.gateway.metrics import RequestChildren

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
MAX_BODY_BYTES = 1 << 20  # a non-streamed answer larger than this is not parsed for usage
_DECODE = msgspec.json.Decoder().decode


def _loads(raw: bytes) -> Any:
    """JSON in C (msgspec); what it refuses and Python's json takes (NaN...) as json takes it."""
    try:
        return _DECODE(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def role_only(chunk: bytes) -> bool:
    """vLLM's first chat event carries the role and no content: not the first token."""
    return b'"role"' in chunk and chunk.count(b"data:") == 1


def usage_from_sse(chunk: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of the SSE event in ``chunk`` that carries a non-null one."""
    at = max(chunk.rfind(_USAGE_MARKERS[0]), chunk.rfind(_USAGE_MARKERS[1]))
    if at < 0:
        return None
    start = chunk.rfind(b"data:", 0, at)
    if start < 0:
        return None
    end = chunk.find(b"\n\n", at)
    try:
        usage = _loads(chunk[start + 5 : end if end >= 0 else len(chunk)]).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def usage_from_body(body: bytes) -> dict[str, Any] | None:
    try:
        usage = _loads(body).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _count(usage: dict[str, Any] | None, key: str) -> int | None:
    value = usage.get(key) if usage else None
    return value if isinstance(value, int) and value >= 0 else None


def _cached(usage: dict[str, Any] | None) -> int | None:
    details = usage.get("prompt_tokens_details") if usage else None
    return _count(details, "cached_tokens") if isinstance(details, dict) else None


def prefix_blocks(
    predicted: int, cached_tokens: int, prompt_tokens: int | None, block_size: int
) -> tuple[int, int]:
    """(predicted, reported) cached KV blocks of one answer. A replica always computes the
    prompt's last token (it needs its logits), so it can report at most
    ``(prompt_tokens - 1) // block_size`` blocks; the prediction is capped the same way."""
    if prompt_tokens is not None and prompt_tokens > 0:
        predicted = min(predicted, (prompt_tokens - 1) // block_size)
    return predicted, cached_tokens // block_size


class Tally:
    """What one relayed answer looked like; ``chunk`` per body chunk, ``finish`` once."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_gaps_s",
        "_last_s",
        "_usage_chunk",
        "arrived_s",
        "cached_tokens",
        "events",
        "slo_met",
        "stream",
        "tpot_s",
        "ttft_s",
    )

    def __init__(self, *, arrived_s: float, stream: bool) -> None:
        self.arrived_s = arrived_s
        self.stream = stream
        self.ttft_s: float | None = None
        self.tpot_s: float | None = None  # set by ``finish`` for a stream of 2+ tokens
        self.slo_met = False  # set by ``finish``
        self.cached_tokens: int | None = None  # set by ``finish``: the usage's, when reported
        self.events = 0
        self._last_s = arrived_s
        self._gaps_s: list[float] = []
        self._usage_chunk: bytes | None = None
        self._body: list[bytes] | None = None if stream else []
        self._body_bytes = 0

    def chunk(self, chunk: bytes, now_s: float) -> None:
        if self.ttft_s is None:
            if not role_only(chunk):
                self.ttft_s = now_s - self.arrived_s
        else:
            self._gaps_s.append(now_s - self._last_s)
        self._last_s = now_s
        self.events += chunk.count(b"data:")
        if self._body is not None:
            self._body_bytes += len(chunk)
            if self._body_bytes <= MAX_BODY_BYTES:
                self._body.append(chunk)
        elif _USAGE_MARKERS[0] in chunk or _USAGE_MARKERS[1] in chunk:
            self._usage_chunk = chunk

    def usage(self) -> dict[str, Any] | None:
        if self._body is not None:
            if self._body_bytes > MAX_BODY_BYTES:
                return None
            return usage_from_body(b"".join(self._body))
        return usage_from_sse(self._usage_chunk) if self._usage_chunk else None

    def finish(
        self,
        m: RequestChildren,
        *,
        now_s: float,
        status: int,
        chat: bool,
        slo: SloConfig | None,
    ) -> tuple[int | None, int | None]:
        """Observe E2E always; TTFT, TPOT, ITL for streams; tokens and goodput for a 2xx.
        Returns the (prompt, output) tokens counted (``None``: not known)."""
        e2e_s = now_s - self.arrived_s
        m.e2e.observe(e2e_s)
        if not 200 <= status < 300:
            return None, None
        usage = self.usage()
        prompt, output = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        self.cached_tokens = _cached(usage)
        tpot_s: float | None = None
        if self.stream and self.ttft_s is not None:
            m.ttft.observe(self.ttft_s)
            for gap_s in self._gaps_s:
                m.itl.observe(gap_s)
            if output is None:
                # data events minus [DONE] (and a chat stream's role-only first event)
                output = max(0, self.events - 1 - (1 if chat else 0))
            if output > 1:
                tpot_s = (e2e_s - self.ttft_s) / (output - 1)
                m.tpot.observe(tpot_s)
        if prompt:
            m.prompt_tokens.inc(prompt)
        if output:
            m.output_tokens.inc(output)
        self.tpot_s = tpot_s
        if _meets(slo, ttft_s=self.ttft_s if self.stream else e2e_s, tpot_s=tpot_s):
            self.slo_met = True
            m.slo_met.inc()
        return prompt, output


def _meets(slo: SloConfig | None, *, ttft_s: float | None, tpot_s: float | None) -> bool:
    """Every threshold given holds (one that cannot be measured for this request holds)."""
    if slo is None:
        return True
    if slo.ttft_p99_ms is not None and ttft_s is not None and ttft_s * 1e3 > slo.ttft_p99_ms:
        return False
    return not (
        slo.tpot_p99_ms is not None and tpot_s is not None and tpot_s * 1e3 > slo.tpot_p99_ms
    )
