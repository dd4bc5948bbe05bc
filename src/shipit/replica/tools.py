"""Tool calling at the replica: tools into the prompt, tool calls out of the model's text.

Owns the output side (``ToolCallParser``: streamed text in, plain content and whole tool calls
out; a ``<tool_call>`` block that is not valid JSON naming a known function stays content). The
prompt side (tools and earlier calls rendered into the prompt) is ``engine.chat_prompt``, shared
with the gateway, which renders chat prompts the same way to hash them. It must not sample or
touch HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shipit.core import safe_json
from shipit.core.errors import InvalidRequestError
from shipit.engine.structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model made: ``arguments`` is JSON text, as OpenAI returns it."""

    id: str
    name: str
    arguments: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def parse_call(body: str, names: frozenset[str]) -> ToolCall | None:
    """``{"name": ..., "arguments": {...}}`` naming one of ``names``, or None."""
    try:
        obj = safe_json.loads(body)
    except InvalidRequestError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = safe_json.loads(args)
        except InvalidRequestError:
            return None
    if not isinstance(args, dict):
        return None
    call_id = "call_" + uuid.uuid4().hex[:24]
    return ToolCall(call_id, str(obj["name"]), json.dumps(args, ensure_ascii=False))


class ToolCallParser:
    """Splits one choice's streamed text into content and ``<tool_call>`` blocks.

    ``feed`` returns the content safe to show now (a possible start of ``<tool_call>`` is held
    back) and the calls completed by this delta; ``finish`` releases the rest: an unclosed block
    that parses is a call (the model stopped at EOS before the closing tag), anything else is
    content.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)
        self._buf = ""
        self._inside = False
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._buf += text
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            if not self._inside:
                at = self._buf.find(TOOL_CALL_OPEN)
                if at < 0:
                    keep = _partial_prefix(self._buf, TOOL_CALL_OPEN)
                    content.append(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep :]
                    break
                content.append(self._buf[:at])
                self._buf = self._buf[at + len(TOOL_CALL_OPEN) :]
                self._inside = True
            end = self._buf.find(TOOL_CALL_CLOSE)
            if end < 0:
                break
            body, self._buf = self._buf[:end], self._buf[end + len(TOOL_CALL_CLOSE) :]
            self._inside = False
            call = parse_call(body, self._names)
            if call is None:
                content.append(TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE)
            else:
                calls.append(call)
        self.calls.extend(calls)
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        rest, self._buf = self._buf, ""
        if not self._inside:
            return rest, []
        self._inside = False
        call = parse_call(rest, self._names)
        if call is None:
            return TOOL_CALL_OPEN + rest, []
        self.calls.append(call)
        return "", [call]


def _partial_prefix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that ``tag`` starts with (held back)."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[len(text) - length :]):
            return length
    return 0
