"""OpenAI response bodies: completions and chat completions, whole or as SSE chunks.

Owns the exact JSON shapes (ids, ``object`` names, ``usage`` with cached prompt tokens,
``logprobs`` in the legacy completions shape and in the chat shape) and the SSE framing
(``data: {...}\\n\\n`` then ``data: [DONE]\\n\\n``), as OpenAI and vLLM write them. One
``ResponseWriter`` per request; it keeps only counters and the accumulated text. It must not
talk to the engine or to HTTP.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from shipit.engine.engine import RequestOutput, TokenLogprob
from shipit.engine.tokenizer import Tokenizer

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def new_request_id(kind: Literal["completion", "chat"]) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex


class ResponseWriter:
    def __init__(
        self,
        *,
        request_id: str,
        kind: Literal["completion", "chat"],
        model: str,
        tokenizer: Tokenizer,
        include_usage: bool = False,
    ) -> None:
        self.request_id = request_id
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.include_usage = include_usage
        self.created = int(time.time())
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self._text: list[str] = []
        self._lps: list[TokenLogprob] = []

    # ----- shared pieces --------------------------------------------------------------
    def _record(self, out: RequestOutput) -> None:
        self.prompt_tokens = out.num_prompt_tokens
        self.completion_tokens = out.num_output_tokens
        self.cached_tokens = out.num_cached_tokens
        if out.finished:
            self.finish_reason = out.finish_reason

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def _head(self, chunk: bool) -> dict[str, Any]:
        if self.kind == "completion":
            obj = "text_completion"
        else:
            obj = "chat.completion.chunk" if chunk else "chat.completion"
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _completion_logprobs(self, lps: Sequence[TokenLogprob]) -> dict[str, Any]:
        return {
            "tokens": [self._token_text(lp.token_id) for lp in lps],
            "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{self._token_text(t): v for t, v in lp.top_logprobs} for lp in lps],
            "text_offset": [],
        }

    def _chat_logprobs(self, lps: Sequence[TokenLogprob]) -> dict[str, Any]:
        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            text = self._token_text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return {
            "content": [
                entry(lp.token_id, lp.logprob)
                | {"top_logprobs": [entry(t, v) for t, v in lp.top_logprobs]}
                for lp in lps
            ]
        }

    def _logprobs(self, lps: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        if not lps:
            return None
        if self.kind == "completion":
            return self._completion_logprobs(lps)
        return self._chat_logprobs(lps)

    # ----- streaming ------------------------------------------------------------------
    def role_chunk(self) -> bytes:
        """Chat streams open with the assistant role, as OpenAI's do."""
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return self._chunk(choice)

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        body = self._head(chunk=True) | {"choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return sse(body)

    def chunk(self, out: RequestOutput) -> bytes:
        """One SSE event for one engine output; empty when there is nothing to say."""
        self._record(out)
        if not out.new_text and not out.finished and not out.logprobs:
            return b""
        if self.kind == "completion":
            choice: dict[str, Any] = {"index": 0, "text": out.new_text}
        else:
            delta = {"content": out.new_text} if out.new_text or not out.finished else {}
            choice = {"index": 0, "delta": delta}
        choice["logprobs"] = self._logprobs(out.logprobs)
        choice["finish_reason"] = out.finish_reason if out.finished else None
        return self._chunk(choice)

    def usage_chunk(self) -> bytes:
        return sse(self._head(chunk=True) | {"choices": [], "usage": self.usage()})

    # ----- whole responses ------------------------------------------------------------
    def add(self, out: RequestOutput) -> None:
        self._record(out)
        self._text.append(out.new_text)
        self._lps.extend(out.logprobs)

    def body(self) -> dict[str, Any]:
        text = "".join(self._text)
        choice: dict[str, Any]
        if self.kind == "completion":
            choice = {"index": 0, "text": text}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        choice["logprobs"] = self._logprobs(self._lps)
        choice["finish_reason"] = self.finish_reason
        return self._head(chunk=False) | {"choices": [choice], "usage": self.usage()}
