"""Chat messages and tools rendered into a prompt, as the replica computes it.

Owns the prompt side of chat and tool calling (a model whose chat template knows ``tools`` gets
them through the template, as transformers passes them; any other template gets the
Hermes/Qwen convention as a system message: the functions as JSON inside ``<tools></tools>``,
calls written as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, earlier calls in
assistant turns written the same way, and tool results as user turns inside
``<tool_response></tool_response>``). The replica renders every chat request with
``render_chat``, and a gateway that tokenizes prompts for prefix-cache routing renders them with
the same function, so both compute the same token ids. It must not sample or touch HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from shipit.core import safe_json
from shipit.core.errors import InvalidRequestError
from shipit.engine.structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from shipit.engine.tokenizer import Tokenizer

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
