"""OpenAI response bodies: completions and chat completions, whole or as SSE chunks.

Owns the exact JSON shapes (ids, ``object`` names, one ``choices`` entry per choice with its
``index``, ``usage`` with cached prompt tokens, ``logprobs`` in the legacy completions shape and
in the chat shape, assistant ``tool_calls`` with ``finish_reason: "tool_calls"``) and the SSE
framing (``data: {...}\\n\\n`` then ``data: [DONE]\\n\\n``), as OpenAI and vLLM write them. One
``ResponseWriter`` per request, one ``_Choice`` per choice; they keep only counters, the
accumulated text and the tool-call parser. It must not talk to the engine or to HTTP.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shipit.engine.engine import RequestOutput, TokenLogprob
from shipit.engine.tokenizer import Tokenizer
from shipit.replica.tools import ToolCall, ToolCallParser

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def new_request_id(kind: Literal["completion", "chat"]) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex


@dataclass(slots=True)
class _Choice:
    index: int
    prompt_index: int
    echo: str
    parser: ToolCallParser | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None
    text: list[str] = field(default_factory=list)
    lps: list[TokenLogprob] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    started: bool = False  # the echo (or the role) has been streamed


class ResponseWriter:
    def __init__(
        self,
        *,
        request_id: str,
        kind: Literal["completion", "chat"],
        model: str,
        tokenizer: Tokenizer,
        include_usage: bool = False,
        choices: Sequence[tuple[int, str]] = ((0, ""),),
        tool_names: Sequence[str] | None = None,
    ) -> None:
        """``choices``: (prompt index, echo text) per choice, in index order; ``tool_names``:
        the functions whose calls are parsed out of chat text (None: no tool parsing)."""
        self.request_id = request_id
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.include_usage = include_usage
        self.created = int(time.time())
        self.choices = [
            _Choice(i, p, echo, ToolCallParser(tool_names) if tool_names is not None else None)
            for i, (p, echo) in enumerate(choices)
        ]

    # ----- shared pieces --------------------------------------------------------------
    def _record(self, c: _Choice, out: RequestOutput) -> None:
        c.prompt_tokens = out.num_prompt_tokens
        c.completion_tokens = out.num_output_tokens
        c.cached_tokens = out.num_cached_tokens
        if out.finished:
            c.finish_reason = out.finish_reason

    def _finish_reason(self, c: _Choice) -> str | None:
        if c.finish_reason == "stop" and c.calls:
            return "tool_calls"
        return c.finish_reason

    def usage(self) -> dict[str, Any]:
        """Prompt tokens count once per prompt (its ``n`` choices share it)."""
        prompts: dict[int, _Choice] = {}
        for c in self.choices:
            prompts.setdefault(c.prompt_index, c)
        prompt = sum(c.prompt_tokens for c in prompts.values())
        cached = sum(c.cached_tokens for c in prompts.values())
        completion = sum(c.completion_tokens for c in self.choices)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
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
        tokens = [self._token_text(lp.token_id) for lp in lps]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return {
            "tokens": tokens,
            "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{self._token_text(t): v for t, v in lp.top_logprobs} for lp in lps],
            "text_offset": offsets,
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
            ],
            "refusal": None,
        }

    def _logprobs(self, lps: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        if not lps:
            return None
        if self.kind == "completion":
            return self._completion_logprobs(lps)
        return self._chat_logprobs(lps)

    def _split(self, c: _Choice, text: str, finished: bool) -> tuple[str, list[ToolCall]]:
        """Text into (content, completed tool calls) through the choice's parser, if any."""
        if c.parser is None:
            return text, []
        content, calls = c.parser.feed(text)
        if finished:
            rest, more = c.parser.finish()
            content, calls = content + rest, calls + more
        c.calls.extend(calls)
        return content, calls

    # ----- streaming ------------------------------------------------------------------
    def role_chunk(self, index: int = 0) -> bytes:
        """Chat streams open each choice with the assistant role, as OpenAI's do."""
        choice = {
            "index": index,
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

    def chunk(self, out: RequestOutput, index: int = 0) -> bytes:
        """The SSE events for one engine output of choice ``index``; empty when there is
        nothing to say. The first output of a choice also carries its echo or its role."""
        c = self.choices[index]
        self._record(c, out)
        first, c.started = not c.started, True
        head = self.role_chunk(index) if first and self.kind == "chat" else b""
        text, calls = self._split(c, (c.echo if first else "") + out.new_text, out.finished)
        if not text and not calls and not out.finished and not out.logprobs:
            return head
        if self.kind == "completion":
            choice: dict[str, Any] = {"index": index, "text": text}
        else:
            delta: dict[str, Any] = {"content": text} if text or not out.finished else {}
            if calls:
                n = len(c.calls) - len(calls)
                delta["tool_calls"] = [
                    {"index": n + i} | call.to_json() for i, call in enumerate(calls)
                ]
            choice = {"index": index, "delta": delta}
        choice["logprobs"] = self._logprobs(out.logprobs)
        choice["finish_reason"] = self._finish_reason(c) if out.finished else None
        return head + self._chunk(choice)

    def usage_chunk(self) -> bytes:
        return sse(self._head(chunk=True) | {"choices": [], "usage": self.usage()})

    # ----- whole responses ------------------------------------------------------------
    def add(self, out: RequestOutput, index: int = 0) -> None:
        c = self.choices[index]
        self._record(c, out)
        c.text.append(out.new_text)
        c.lps.extend(out.logprobs)

    def _whole_choice(self, c: _Choice) -> dict[str, Any]:
        text = "".join(c.text)
        choice: dict[str, Any]
        if self.kind == "completion":
            choice = {"index": c.index, "text": c.echo + text}
        else:
            content, _ = self._split(c, text, finished=True)
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if c.calls:
                message["content"] = content if content.strip() else None
                message["tool_calls"] = [call.to_json() for call in c.calls]
            choice = {"index": c.index, "message": message}
        choice["logprobs"] = self._logprobs(c.lps)
        choice["finish_reason"] = self._finish_reason(c)
        return choice

    def body(self) -> dict[str, Any]:
        choices = [self._whole_choice(c) for c in self.choices]
        return self._head(chunk=False) | {"choices": choices, "usage": self.usage()}
