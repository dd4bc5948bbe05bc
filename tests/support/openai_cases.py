"""OpenAI request bodies and response checks shared by the conformance tests of the replica
(in-process) and of the gateway (through ``shipit up``): valid request bodies, bodies OpenAI's
schema refuses, SSE parsing and the schema checks. Tests only."""

from __future__ import annotations

import json
from typing import Any

from support.openai_schema import errors

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
SMALL_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "kind": {"enum": ["a", "b", "c"]}},
    "required": ["ok", "kind"],
    "additionalProperties": False,
}


def sse_chunks(text: str) -> list[dict[str, Any]]:
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def conforms(schema: str, instance: Any) -> None:
    problems = errors(schema, instance)
    assert not problems, f"{schema}: {problems[:5]}\n{json.dumps(instance)[:2000]}"


CHAT_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"max_tokens": 5, "temperature": 0},
    "sampled_seeded_penalised": {
        "max_tokens": 5,
        "seed": 3,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "logit_bias": {"7": -100},
    },
    "logprobs": {"max_completion_tokens": 3, "logprobs": True, "top_logprobs": 2, "seed": 1},
    "n3": {"n": 3, "max_tokens": 4, "seed": 2},
    "json_schema": {
        "max_tokens": 40,
        "seed": 4,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SMALL_SCHEMA, "strict": True},
        },
    },
    "json_object": {"max_tokens": 8, "seed": 1, "response_format": {"type": "json_object"}},
    "tools_required": {"max_tokens": 120, "tools": [WEATHER_TOOL], "tool_choice": "required"},
    "tools_named": {
        "max_tokens": 120,
        "seed": 5,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "tools_auto": {"max_tokens": 6, "temperature": 0, "tools": [WEATHER_TOOL]},
}


COMPLETION_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"prompt": "hello world", "max_tokens": 4, "temperature": 0},
    "list_n_echo": {"prompt": ["hello", "The capital"], "n": 2, "echo": True, "max_tokens": 3},
    "token_prompts": {"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 2, "seed": 0},
    "logprobs": {"prompt": "hello", "max_tokens": 3, "logprobs": 2, "seed": 0},
}


def finish_reason_relaxed(chunk: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's schema has no chunk type for streamed completions (its streams reuse
    ``CreateCompletionResponse``), yet its streams send ``finish_reason: null`` until a choice
    ends, as ours do: only that one field is relaxed."""
    choices = [
        c | {"finish_reason": "length"} if c["finish_reason"] is None else c
        for c in chunk["choices"]
    ]
    return chunk | {"choices": choices}


BAD_CHAT = [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": None}]}, "invalid_type"),
    ({"messages": USER, "stream": "yes"}, "invalid_type"),
    ({"messages": USER, "max_tokens": "5"}, "invalid_type"),
    ({"messages": USER, "n": "2"}, "invalid_type"),
    ({"messages": USER, "temperature": "hot"}, "invalid_type"),
    ({"messages": USER, "tool_choice": "maybe"}, "invalid_value"),
]
