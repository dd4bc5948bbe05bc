"""Tool calling at the replica: tools into the prompt, tool calls out of the model's text.

Owns the prompt side (a model whose chat template knows ``tools`` gets them through the
template, as transformers passes them; any other template gets the Hermes/Qwen convention as a
system message: the functions as JSON inside ``<tools></tools>``, calls written as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, earlier calls in assistant turns
written the same way, and tool results as user turns inside ``<tool_response></tool_response>``)
and the output side (``ToolCallParser``: streamed text in, plain content and whole tool calls
out; a ``<tool_call>`` block that is not valid JSON naming a known function stays content).
It must not sample or touch HTTP.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shipit.core.errors import InvalidRequestError
from shipit.engine.structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from shipit.engine.tokenizer import Tokenizer
from shipit.replica import safe_json

TOOLS_SYSTEM_PROMPT = (
    "You are a function calling AI model. You may call one or more functions to assist with "
    "the user query. Don't make assumptions about what values to plug into functions. Here are "
    "the available tools:\n<tools>\n{tools}\n</tools>\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_supports_tools(template: str | None) -> bool:
    """A chat template that reads a ``tools`` variable renders them itself."""
    return bool(template) and "tools" in str(template)


def _arguments_object(arguments: str) -> Any:
    try:  # strict: a client's arguments must not nest past the limit or hold lone surrogates
        return safe_json.loads(arguments)
    except InvalidRequestError:
        return arguments


def _call_text(call: dict[str, Any]) -> str:
    fn = call["function"]
    body = {"name": fn["name"], "arguments": _arguments_object(fn["arguments"])}
    return f"{TOOL_CALL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """One message with tool calls and tool results written as text (Hermes convention)."""
    role, content = message["role"], message.get("content") or ""
    if role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    if role == "developer":
        return {"role": "system", "content": content}
    if role == "assistant" and message.get("tool_calls"):
        calls = "\n".join(_call_text(c) for c in message["tool_calls"])
        return {"role": "assistant", "content": f"{content}\n{calls}" if content else calls}
    return {"role": role, "content": content}


def _for_template(message: dict[str, Any]) -> dict[str, Any]:
    """One message as transformers hands it to a tools-aware template (arguments as objects)."""
    if message["role"] == "developer":
        return {**message, "role": "system"}
    if message["role"] != "assistant" or not message.get("tool_calls"):
        return message
    calls = [
        {
            "id": c["id"],
            "type": "function",
            "function": {
                "name": c["function"]["name"],
                "arguments": _arguments_object(c["function"]["arguments"]),
            },
        }
        for c in message["tool_calls"]
    ]
    return {**message, "content": message.get("content") or "", "tool_calls": calls}


def render_chat(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt for ``messages`` (OpenAI dicts) offering ``tools`` (OpenAI tool objects)."""
    if tools and template_supports_tools(tokenizer.chat_template):
        return tokenizer.apply_chat_template(
            [_for_template(m) for m in messages],
            tools=tools,
            add_generation_prompt=add_generation_prompt,
        )
    plain = [_plain(m) for m in messages]
    if tools:
        listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        system = TOOLS_SYSTEM_PROMPT.format(tools=listed)
        if plain and plain[0]["role"] == "system":
            plain[0] = {"role": "system", "content": f"{plain[0]['content']}\n\n{system}"}
        else:
            plain.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(plain, add_generation_prompt=add_generation_prompt)


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
