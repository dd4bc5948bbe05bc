"""OpenAI conformance through ``shipit up`` and directly against its replica, side by side: a
tiny-model replica behind a real gateway process; every served endpoint's answers (responses,
stream chunks, model cards, errors) validate against OpenAI's published schema through both,
refusals carry the same codes, and the gateway lists the model only once it can serve it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

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
from support.up_process import launch

MODEL = "tiny"


@dataclass
class Fleet:
    proc: subprocess.Popen[bytes]
    gateway: str
    replica: str
    log: Path
    first_models: dict[str, Any]  # /v1/models as the gateway answered it right after start
    first_ready: int  # the ready replicas /shipit/status counted just after that answer
    first_readiness: int  # the status of /shipit/ready (no wait) at that time


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("up")
    model_dir = write_tiny_hf_model(root / "model", max_position_embeddings=2048)
    cfg = {
        "deployments": [
            {
                "name": "tiny",
                "model": str(model_dir),
                "served_model_name": MODEL,
                "replicas": 1,
                "replica_args": ["--log-level", "warning"],
                "health_interval_s": 0.2,
            }
        ]
    }
    proc, port, log = launch(root, cfg, ready_replicas=0)  # as soon as the gateway answers
    gateway = f"http://127.0.0.1:{port}"
    try:
        readiness = httpx.get(gateway + "/shipit/ready", timeout=10).status_code
        models = httpx.get(gateway + "/v1/models", timeout=10).json()
        status = httpx.get(gateway + "/shipit/status", timeout=10).json()
        ready = sum(r["state"] == "ready" for r in status["deployments"][0]["replicas"])
        waited = httpx.get(gateway + "/shipit/ready?model=tiny&wait_s=90", timeout=100)
        assert waited.status_code == 200, (waited.text, log.read_text())
        replica = httpx.get(gateway + "/shipit/status", timeout=10).json()
        url = replica["deployments"][0]["replicas"][0]["url"]
        yield Fleet(proc, gateway, url, log, models, ready, readiness)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


@pytest.fixture(params=["gateway", "replica"])
def base(request: pytest.FixtureRequest, fleet: Fleet) -> str:
    return fleet.gateway if request.param == "gateway" else fleet.replica


def test_the_gateway_lists_the_model_only_once_a_replica_can_serve_it(fleet: Fleet) -> None:
    if fleet.first_ready == 0:  # not ready even after /v1/models answered: it must be absent
        assert fleet.first_models == {"object": "list", "data": []}
        assert fleet.first_readiness == 503
    listed = httpx.get(fleet.gateway + "/v1/models").json()
    assert [m["id"] for m in listed["data"]] == [MODEL]


@pytest.mark.parametrize("name", sorted(CHAT_BODIES))
@pytest.mark.parametrize("stream", [False, True])
def test_chat_answers_and_chunks_conform(base: str, name: str, stream: bool) -> None:
    body = {"model": MODEL, "messages": USER, **CHAT_BODIES[name], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    if not stream:
        conforms("CreateChatCompletionResponse", r.json())
        assert len(r.json()["choices"]) == body.get("n", 1)
        return
    chunks = sse_chunks(r.text)
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("name", sorted(COMPLETION_BODIES))
@pytest.mark.parametrize("stream", [False, True])
def test_completion_answers_and_chunks_conform(base: str, name: str, stream: bool) -> None:
    body = {"model": MODEL, **COMPLETION_BODIES[name], "stream": stream}
    r = httpx.post(base + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    if not stream:
        conforms("CreateCompletionResponse", r.json())
        return
    for chunk in sse_chunks(r.text):
        conforms("CreateCompletionResponse", finish_reason_relaxed(chunk))


def test_models_list_and_retrieve_conform(base: str) -> None:
    listed = httpx.get(base + "/v1/models").json()
    conforms("ListModelsResponse", listed)
    assert [m["id"] for m in listed["data"]] == [MODEL]
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve(MODEL).id == MODEL
    conforms("Model", httpx.get(base + f"/v1/models/{MODEL}").json())
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"
    conforms("ErrorResponse", err.value.response.json())


def test_an_unknown_model_names_itself_and_the_served_ones(base: str, fleet: Fleet) -> None:
    r = httpx.post(base + "/v1/chat/completions", json={"model": "gpt-4o", "messages": USER})
    assert r.status_code == 404
    conforms("ErrorResponse", r.json())
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and "`gpt-4o`" in error["message"]
    assert MODEL in error["message"]
    if base == fleet.gateway:
        assert "this replica serves" not in error["message"]
        assert "this gateway serves tiny" in error["message"]


@pytest.mark.parametrize(("extra", "code"), BAD_CHAT)
def test_refused_bodies_get_the_same_code_either_way(
    base: str, extra: dict[str, Any], code: str
) -> None:
    body = {"model": MODEL, **extra}
    assert errors("CreateChatCompletionRequest", body)
    r = httpx.post(base + "/v1/chat/completions", json=body)
    assert r.status_code == 400
    conforms("ErrorResponse", r.json())
    assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("invalid_request_error", code)


def test_malformed_json_and_a_wrong_method(base: str) -> None:
    r = httpx.post(base + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    conforms("ErrorResponse", r.json())
    for method, path, allow in [
        ("GET", "/v1/chat/completions", "POST"),
        ("GET", "/v1/completions", "POST"),
        ("GET", "/tokenize", "POST"),
        ("POST", "/v1/models", "GET, HEAD"),
    ]:
        r = httpx.request(method, base + path)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert r.status_code == 405 and allowed == set(allow.split(", ")), (method, path)
        conforms("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == "method_not_allowed"


def test_context_length_errors_conform(base: str) -> None:
    r = httpx.post(
        base + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 5000}
    )
    assert r.status_code == 400
    conforms("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_tokenize_and_detokenize_answer_alike(fleet: Fleet) -> None:
    answers = []
    for base in (fleet.gateway, fleet.replica):
        tok = httpx.post(base + "/tokenize", json={"model": MODEL, "prompt": "hello world"})
        chat = httpx.post(base + "/tokenize", json={"model": MODEL, "messages": USER})
        tokens = tok.json()["tokens"]
        text = httpx.post(base + "/detokenize", json={"model": MODEL, "tokens": tokens})
        answers.append((tok.json(), chat.json(), text.json()))
    assert answers[0] == answers[1]
    assert answers[0][2] == {"prompt": "hello world"}
    missing = httpx.post(fleet.gateway + "/tokenize", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_streams_are_relayed_event_for_event(fleet: Fleet) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 6, "temperature": 0, "stream": True}
    texts, counts = [], []
    for base in (fleet.gateway, fleet.replica):
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
        chunks = sse_chunks(r.text)
        counts.append(len(chunks))
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks))
    assert texts[0] == texts[1] and counts[0] == counts[1] > 2  # greedy: the same events
