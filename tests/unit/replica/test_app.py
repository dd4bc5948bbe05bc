"""The ASGI app in-process (Starlette's TestClient runs the lifespan): 503 while loading,
ready, streaming shape, drain refusals, a failed load. The engine is the simulated one with a
no-op sleep, so nothing waits on a clock."""

from __future__ import annotations

import json
import threading

from starlette.testclient import TestClient

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.app import create_app
from shipit.replica.lifecycle import Phase
from shipit.replica.settings import ReplicaSettings

SETTINGS = ReplicaSettings(model="llama-3.1-8b", simulate="H100:llama-3.1-8b", retry_after_s=7)


def sim_engine(settings: ReplicaSettings) -> LLMEngine:
    return build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)


def wait_ready(client: TestClient) -> None:
    for _ in range(500):
        if client.get("/health").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


def test_health_is_503_while_loading_then_200() -> None:
    gate = threading.Event()

    def slow(settings: ReplicaSettings) -> LLMEngine:
        gate.wait(10)
        return sim_engine(settings)

    with TestClient(create_app(SETTINGS, engine_factory=slow)) as client:
        loading = client.get("/health")
        assert loading.status_code == 503 and loading.headers["retry-after"] == "7"
        assert "loading" in loading.json()["error"]["message"]
        r = client.post("/v1/completions", json={"model": "llama-3.1-8b", "prompt": "x"})
        assert r.status_code == 503
        gate.set()
        wait_ready(client)


def test_completion_stream_and_models() -> None:
    with TestClient(create_app(SETTINGS, engine_factory=sim_engine)) as client:
        wait_ready(client)
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["llama-3.1-8b"]
        body = {
            "model": "llama-3.1-8b",
            "prompt": "a b c",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with client.stream("POST", "/v1/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "content-length" not in r.headers
            raw = "".join(r.iter_text())
        events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        texts = [c["choices"][0]["text"] for c in chunks[:-1]]
        assert len(texts) == 3 and all(t.startswith(" w") for t in texts)
        assert chunks[-1]["usage"]["completion_tokens"] == 3
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        whole = client.post(
            "/v1/completions", json={**body, "stream": False, "stream_options": None}
        )
        assert whole.json()["usage"]["completion_tokens"] == 3


def test_draining_refuses_new_work_with_retry_after() -> None:
    app = create_app(SETTINGS, engine_factory=sim_engine)
    with TestClient(app) as client:
        wait_ready(client)
        app.state.replica.lifecycle.phase = Phase.DRAINING
        r = client.post(
            "/v1/chat/completions",
            json={"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert "draining" in r.json()["error"]["message"]
        assert client.get("/health").status_code == 503
        assert client.get("/metrics").status_code == 200  # still observable


def test_a_failed_load_is_reported_and_fatal() -> None:
    fatal: list[bool] = []

    def broken(settings: ReplicaSettings) -> LLMEngine:
        raise FileNotFoundError("no weights here")

    with TestClient(
        create_app(SETTINGS, engine_factory=broken, on_fatal=lambda: fatal.append(True))
    ) as client:
        for _ in range(500):
            r = client.get("/health")
            if "failed" in r.json()["error"]["message"]:
                break
            threading.Event().wait(0.01)
        assert r.status_code == 503 and "no weights here" in r.json()["error"]["message"]
    assert fatal == [True]


def test_a_failing_engine_step_is_an_openai_shaped_500_and_counted() -> None:
    def broken(settings: ReplicaSettings) -> LLMEngine:
        engine = sim_engine(settings)

        def boom(items: object) -> object:
            raise RuntimeError("executor exploded")

        engine.executor.execute = boom  # type: ignore[method-assign,assignment]
        return engine

    body = {"model": "llama-3.1-8b", "prompt": "a b c", "max_tokens": 3}
    with TestClient(create_app(SETTINGS, engine_factory=broken)) as client:
        wait_ready(client)
        for stream in (False, True):
            r = client.post("/v1/completions", json=body | {"stream": stream})
            assert r.status_code == 500
            error = r.json()["error"]
            assert (error["type"], error["code"]) == ("server_error", "internal_error")
            assert "executor exploded" in error["message"]
        metrics = client.get("/metrics").text
    assert (
        'vllm:request_success_total{finished_reason="error",model_name="llama-3.1-8b"} 2.0'
        in metrics
    )
