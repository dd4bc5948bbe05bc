"""vLLM's /tokenize and /detokenize on the replica: prompts and chat messages (tools included)
tokenized as generation would tokenize them, token strings on request, refusals in OpenAI's
shape."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from support.tiny_model import write_tiny_hf_model

MESSAGES = [{"role": "user", "content": "hello world"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m", max_position_embeddings=2048)
    with TestClient(create_app(ReplicaSettings(model=str(path), served_model_name="t"))) as c:
        for _ in range(1000):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.01)
        yield c


def test_tokenize_a_prompt_and_back(client: TestClient) -> None:
    r = client.post(
        "/tokenize", json={"model": "t", "prompt": "hello world", "return_token_strs": True}
    )
    body = r.json()
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 2048
    assert "".join(body["token_strs"]) == "hello world"
    assert client.post("/detokenize", json={"tokens": body["tokens"]}).json() == {
        "prompt": "hello world"
    }
    assert client.post("/tokenize", json={"prompt": "x"}).json()["token_strs"] is None


def test_tokenize_messages_counts_what_a_chat_request_would_send(client: TestClient) -> None:
    counted = client.post("/tokenize", json={"messages": MESSAGES}).json()["count"]
    chat = client.post(
        "/v1/chat/completions", json={"model": "t", "messages": MESSAGES, "max_tokens": 1}
    )
    assert chat.json()["usage"]["prompt_tokens"] == counted
    with_tools = client.post("/tokenize", json={"messages": MESSAGES, "tools": [TOOL]}).json()
    assert with_tools["count"] > counted + 50  # the tools system prompt
    no_prompt = client.post(
        "/tokenize", json={"messages": MESSAGES, "add_generation_prompt": False}
    ).json()
    assert no_prompt["count"] < counted


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/detokenize", {"tokens": [5, 100_000]}, 400, "invalid_value"),
        ("/detokenize", {"tokens": "5"}, 400, "invalid_type"),
        ("/tokenize", {"prompt": "x", "model": "nope"}, 404, "model_not_found"),
        ("/tokenize", {"text": "x"}, 400, "missing_required_parameter"),
    ],
)
def test_refusals(
    client: TestClient, path: str, body: dict[str, object], status: int, code: str
) -> None:
    r = client.post(path, json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
