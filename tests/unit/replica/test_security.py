"""Bad input never hurts a healthy replica, and admin routes need the gateway's token.

Each poison body below was a 500 (a traceback, a plain-text page, no metric) before the replica
decoded JSON strictly: a lone surrogate crashed the tokenizer, deep nesting hit the recursion
limit, a 5,000-digit integer hit Python's digit limit. The engine is the simulated one with a
no-op sleep; the LoRA tests use the tiny checkpoint and tiny adapters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from shipit.core.errors import InvalidRequestError
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import load_model
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from support.tiny_model import write_tiny_hf_model

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = ReplicaSettings(model="m", simulate="H100:llama-3.1-8b", admin_token=TOKEN)
CHAT = "/v1/chat/completions"
GOOD = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 2}


def sim_engine(settings: ReplicaSettings) -> LLMEngine:
    return build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)


def wait_ready(client: TestClient) -> None:
    for _ in range(500):
        if client.get("/health").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


def errors_counted(client: TestClient) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "shipit_replica_errors_total":
                out[(s.labels["status"], s.labels["code"])] = s.value
    return out


@pytest.fixture
def client() -> Any:
    with TestClient(create_app(SETTINGS, engine_factory=sim_engine)) as c:
        wait_ready(c)
        yield c


def chat_with(content: str) -> bytes:
    return b'{"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "%s"}]}' % (
        content.encode()
    )


DEEP = b"[" * 50_000 + b"]" * 50_000
POISON = {
    "lone surrogate in chat": (CHAT, chat_with("\\ud800")),
    "lone low surrogate mid-text": (CHAT, chat_with("ok \\udfff ok")),
    "lone surrogate in a completion": ("/v1/completions", b'{"model": "m", "prompt": "\\ud800"}'),
    "lone surrogate to /tokenize": ("/tokenize", b'{"prompt": "a \\ud83d"}'),
    "lone surrogate in a key": (CHAT, b'{"model": "m", "\\ud800": 1, "messages": []}'),
    "50,000-deep nesting": (CHAT, b'{"model": "m", "x": ' + DEEP + b"}"),
    "50,000-deep to /tokenize": ("/tokenize", b'{"prompt": ' + DEEP + b"}"),
    "5,000-digit integer": (CHAT, b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b"}"),
    "NaN": ("/v1/completions", b'{"model": "m", "prompt": "a", "temperature": NaN}'),
    "Infinity": ("/v1/completions", b'{"model": "m", "prompt": "a", "top_p": -Infinity}'),
    "1e999 overflows": ("/v1/completions", b'{"model": "m", "prompt": "a", "top_p": 1e999}'),
    "deep tool arguments": (
        CHAT,
        json.dumps(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[" * 50_000},
                            }
                        ],
                    },
                ],
                "max_tokens": 1,
            }
        ).encode(),
    ),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poison_bodies_are_400s_in_openai_shape_and_counted(client: TestClient, name: str) -> None:
    path, body = POISON[name]
    before = sum(v for (status, _), v in errors_counted(client).items() if status == "400")
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    if name == "deep tool arguments":  # the arguments string is kept as text: not an error
        assert r.status_code == 200
        return
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] in {"invalid_json", "invalid_value"}
    after = sum(v for (status, _), v in errors_counted(client).items() if status == "400")
    assert after == before + 1
    assert client.post(CHAT, json=GOOD).status_code == 200  # still healthy


def test_a_surrogate_pair_is_text_not_an_error(client: TestClient) -> None:
    r = client.post(CHAT, content=chat_with("smile \\ud83d\\ude00"))
    assert r.status_code == 200, r.text


def test_surrogate_error_says_where(client: TestClient) -> None:
    r = client.post(CHAT, content=chat_with("ok \\ud800"))
    message = r.json()["error"]["message"]
    assert "messages[0].content" in message and "\\ud800" in message
    assert r.json()["error"]["param"] == "messages"


def test_tokenizer_refuses_surrogates_itself() -> None:
    """Defence in depth: a caller that skips the JSON checks gets a 400-kind error too."""
    engine = sim_engine(SETTINGS)
    with pytest.raises(InvalidRequestError, match="surrogate"):
        engine.tokenizer.encode("a \ud800 b")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")


def test_real_tokenizer_refuses_surrogates(tiny_model: Path) -> None:
    tokenizer = load_model(str(tiny_model)).tokenizer
    with pytest.raises(InvalidRequestError, match="surrogate"):
        tokenizer.encode("a \ud800 b")


# ----- limits --------------------------------------------------------------------------------
def test_body_over_the_limit_is_413_by_content_length() -> None:
    settings = dataclasses.replace(SETTINGS, max_body_bytes=1000)
    with TestClient(create_app(settings, engine_factory=sim_engine)) as client:
        wait_ready(client)
        r = client.post(CHAT, json={**GOOD, "user": "x" * 2000})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert "1000" in r.json()["error"]["message"]
        assert r.headers["connection"] == "close"
        assert errors_counted(client)[("413", "request_too_large")] == 1
        assert client.post(CHAT, json=GOOD).status_code == 200


def test_chunked_body_over_the_limit_is_413_while_reading() -> None:
    settings = dataclasses.replace(SETTINGS, max_body_bytes=1000)
    app = create_app(settings, engine_factory=sim_engine)
    chunks = [b'{"model": "m", "prompt": "', b"a " * 400, b"a " * 400, b'"}']
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not chunks:
            await asyncio.sleep(3600)
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert len(chunks) == 1  # it stopped reading once past the limit


def test_too_many_messages_is_400_with_value_and_limit() -> None:
    settings = dataclasses.replace(SETTINGS, max_messages=3)
    with TestClient(create_app(settings, engine_factory=sim_engine)) as client:
        wait_ready(client)
        messages = [{"role": "user", "content": "hi"}] * 4
        r = client.post(CHAT, json={**GOOD, "messages": messages})
        assert r.status_code == 400
        message = r.json()["error"]["message"]
        assert "4 messages" in message and "at most 3" in message
        assert r.json()["error"]["param"] == "messages"
        r = client.post(CHAT, json={**GOOD, "messages": messages[:3]})
        assert r.status_code == 200


def test_prompt_over_the_character_limit_is_400() -> None:
    settings = dataclasses.replace(SETTINGS, max_prompt_chars=100)
    with TestClient(create_app(settings, engine_factory=sim_engine)) as client:
        wait_ready(client)
        r = client.post("/v1/completions", json={"model": "m", "prompt": "a" * 101})
        assert r.status_code == 400 and "101 characters" in r.json()["error"]["message"]
        assert "at most 100" in r.json()["error"]["message"]
        chat = {**GOOD, "messages": [{"role": "user", "content": "b" * 60}] * 2}
        r = client.post(CHAT, json=chat)
        assert r.status_code == 400 and "120 characters" in r.json()["error"]["message"]
        r = client.post("/tokenize", json={"prompt": "c" * 101})
        assert r.status_code == 400
        r = client.post("/v1/completions", json={"model": "m", "prompt": "a " * 50})
        assert r.status_code == 200


def test_an_unhandled_error_is_an_openai_500_that_closes_the_connection() -> None:
    def exploding(settings: ReplicaSettings) -> LLMEngine:
        engine = sim_engine(settings)
        real = engine.tokenizer.encode

        def encode(text: str, *, add_special_tokens: bool = False) -> list[int]:
            if "boom" in text:
                raise RuntimeError("a bug")
            return real(text, add_special_tokens=add_special_tokens)

        engine.tokenizer.encode = encode  # type: ignore[method-assign]
        return engine

    app = create_app(SETTINGS, engine_factory=exploding)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        r = client.post("/v1/completions", json={"model": "m", "prompt": "boom"})
        assert r.status_code == 500
        assert r.headers["connection"] == "close"
        assert r.json()["error"]["type"] == "server_error"
        assert "RuntimeError" in r.json()["error"]["message"]
        assert errors_counted(client)[("500", "internal_error")] == 1
        ok = client.post("/v1/completions", json={"model": "m", "prompt": "ok"})
        assert ok.status_code == 200


def test_settings_refuse_nonsense_limits() -> None:
    with pytest.raises(InvalidRequestError, match="--max-body-bytes"):
        ReplicaSettings(model="m", max_body_bytes=0)
