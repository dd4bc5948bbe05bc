"""The replica against OpenAI's published schema: every request body used here is a valid OpenAI
request, and every response, stream chunk, model card and error the replica sends back validates
against OpenAI's own schema for it. Bodies OpenAI's schema refuses get a 400 here too. The tiny
checkpoint runs the real forward pass in-process (Starlette's TestClient)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from support.openai_schema import errors
from support.tiny_model import write_tiny_hf_model

MODEL = "tiny"
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


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m", max_position_embeddings=2048)
    settings = ReplicaSettings(model=str(path), served_model_name=MODEL)
    with TestClient(create_app(settings)) as c:
        for _ in range(1000):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.01)
        yield c


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


@pytest.mark.parametrize("name", sorted(CHAT_BODIES))
@pytest.mark.parametrize("stream", [False, True])
def test_chat_responses_and_chunks_conform(client: TestClient, name: str, stream: bool) -> None:
    body = {"model": MODEL, "messages": USER, **CHAT_BODIES[name], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    conforms("CreateChatCompletionRequest", body)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    n = body.get("n", 1)
    if not stream:
        conforms("CreateChatCompletionResponse", r.json())
        assert [c["index"] for c in r.json()["choices"]] == list(range(n))
        return
    chunks = sse_chunks(r.text)
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    firsts: dict[int, dict[str, Any]] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        firsts.setdefault(choice["index"], choice)
    assert sorted(firsts) == list(range(n))
    assert all(c["delta"].get("role") == "assistant" for c in firsts.values())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= n


@pytest.mark.parametrize("stream", [False, True])
def test_a_required_tool_call_comes_back_as_tool_calls(client: TestClient, stream: bool) -> None:
    body = {"model": MODEL, "messages": USER, **CHAT_BODIES["tools_required"], "stream": stream}
    r = client.post("/v1/chat/completions", json=body)
    if stream:
        chunks = sse_chunks(r.text)
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        calls = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
        content = "".join(d["delta"].get("content") or "" for d in deltas)
        finish = deltas[-1]["finish_reason"]
        assert calls[0]["index"] == 0
    else:
        choice = r.json()["choices"][0]
        calls, content = choice["message"]["tool_calls"], choice["message"]["content"] or ""
        finish = choice["finish_reason"]
    assert content == "" and finish == "tool_calls" and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert set(json.loads(calls[0]["function"]["arguments"])) == {"city"}


def test_json_schema_output_validates(client: TestClient) -> None:
    body = {"model": MODEL, "messages": USER, **CHAT_BODIES["json_schema"], "n": 4}
    for choice in client.post("/v1/chat/completions", json=body).json()["choices"]:
        obj = json.loads(choice["message"]["content"])
        assert obj["kind"] in ("a", "b", "c") and isinstance(obj["ok"], bool)


COMPLETION_BODIES: dict[str, dict[str, Any]] = {
    "plain": {"prompt": "hello world", "max_tokens": 4, "temperature": 0},
    "list_n_echo": {"prompt": ["hello", "The capital"], "n": 2, "echo": True, "max_tokens": 3},
    "token_prompts": {"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 2, "seed": 0},
    "logprobs": {"prompt": "hello", "max_tokens": 3, "logprobs": 2, "seed": 0},
}


@pytest.mark.parametrize("name", sorted(COMPLETION_BODIES))
@pytest.mark.parametrize("stream", [False, True])
def test_completion_responses_and_chunks_conform(
    client: TestClient, name: str, stream: bool
) -> None:
    body = {"model": MODEL, **COMPLETION_BODIES[name], "stream": stream}
    conforms("CreateCompletionRequest", body)
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    choices = len(prompts) * body.get("n", 1)
    if not stream:
        conforms("CreateCompletionResponse", r.json())
        assert [c["index"] for c in r.json()["choices"]] == list(range(choices))
        if body.get("echo"):
            texts = [c["text"] for c in r.json()["choices"]]
            echoed = ["hello", "hello", "The capital", "The capital"]
            assert all(t.startswith(p) for t, p in zip(texts, echoed, strict=True))
        return
    chunks = sse_chunks(r.text)
    for chunk in chunks:
        conforms("CreateCompletionResponse", finish_reason_relaxed(chunk))
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == set(range(choices))
    ends = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert sum(e is not None for e in ends) == choices


def finish_reason_relaxed(chunk: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's schema has no chunk type for streamed completions (its streams reuse
    ``CreateCompletionResponse``), yet its streams send ``finish_reason: null`` until a choice
    ends, as ours do: only that one field is relaxed."""
    choices = [
        c | {"finish_reason": "length"} if c["finish_reason"] is None else c
        for c in chunk["choices"]
    ]
    return chunk | {"choices": choices}


def test_models_conform_and_retrieve(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    conforms("ListModelsResponse", listed)
    one = client.get(f"/v1/models/{MODEL}")
    assert one.status_code == 200 and one.json() == listed["data"][0]
    conforms("Model", one.json())
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    conforms("ErrorResponse", missing.json())
    assert missing.json()["error"]["code"] == "model_not_found"


BAD_CHAT = [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": None}]}, "invalid_type"),
    ({"messages": USER, "stream": "yes"}, "invalid_type"),
    ({"messages": USER, "max_tokens": "5"}, "invalid_type"),
    ({"messages": USER, "n": "2"}, "invalid_type"),
    ({"messages": USER, "temperature": "hot"}, "invalid_type"),
    ({"messages": USER, "tool_choice": "maybe"}, "invalid_value"),
]


@pytest.mark.parametrize(("extra", "code"), BAD_CHAT)
def test_bodies_openai_refuses_are_400s_in_openai_shape(
    client: TestClient, extra: dict[str, Any], code: str
) -> None:
    body = {"model": MODEL, **extra}
    assert errors("CreateChatCompletionRequest", body), "OpenAI's schema accepts this body"
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    conforms("ErrorResponse", r.json())
    assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("invalid_request_error", code)


def test_wrong_method_is_405_and_unknown_path_404_in_openai_shape(client: TestClient) -> None:
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    conforms("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.post("/v1/models")
    assert r.status_code == 405
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_context_length_error_conforms(client: TestClient) -> None:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 5000}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400
    conforms("ErrorResponse", r.json())
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is 2048 tokens; ")
