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
from support.openai_cases import (
    BAD_CHAT,
    CHAT_BODIES,
    COMPLETION_BODIES,
    USER,
    conforms,
    finish_reason_relaxed,
    sse_chunks,
)
from support.openai_schema import errors
from support.tiny_model import write_tiny_hf_model

MODEL = "tiny"


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
