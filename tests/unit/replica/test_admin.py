"""The replica's admin routes in-process: LoRA load/unload refusals, KV events paging and its
parameter checks, the startup report. The engine is the simulated one with a no-op sleep."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.admin import MAX_KV_EVENTS_PAGE
from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = ReplicaSettings(
    model="llama-3.1-8b", simulate="H100:llama-3.1-8b", retry_after_s=7, admin_token=TOKEN
)


def sim_engine(settings: ReplicaSettings) -> LLMEngine:
    return build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)


def wait_ready(client: TestClient) -> None:
    for _ in range(500):
        if client.get("/health").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


def test_lora_admin_is_refused_while_loading() -> None:
    gate = threading.Event()

    def slow(settings: ReplicaSettings) -> LLMEngine:
        gate.wait(10)
        return sim_engine(settings)

    settings = dataclasses.replace(SETTINGS, enable_lora_loading=True, lora_roots=("/",))
    with TestClient(create_app(settings, engine_factory=slow), headers=AUTH) as client:
        body = {"lora_name": "a", "lora_path": "/nowhere"}
        r = client.post("/v1/load_lora_adapter", json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert client.get("/shipit/startup").json()["phase"] == "loading"
        gate.set()
        wait_ready(client)


def test_lora_load_and_unload_errors_name_the_parameter(tmp_path: Path) -> None:
    settings = dataclasses.replace(SETTINGS, enable_lora_loading=True, lora_roots=(str(tmp_path),))
    with TestClient(create_app(settings, engine_factory=sim_engine), headers=AUTH) as client:
        wait_ready(client)
        base = client.post(
            "/v1/load_lora_adapter", json={"lora_name": "llama-3.1-8b", "lora_path": "/x"}
        )
        assert base.status_code == 400 and base.json()["error"]["param"] == "lora_name"
        body = {"lora_name": "a", "lora_path": str(tmp_path / "no-such-adapter")}
        missing = client.post("/v1/load_lora_adapter", json=body)
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "lora_path"
        unknown = client.post("/v1/unload_lora_adapter", json={"lora_name": "a"})
        assert unknown.status_code == 404 and "not loaded" in unknown.json()["error"]["message"]


def test_kv_events_page_after_a_request() -> None:
    with TestClient(create_app(SETTINGS, engine_factory=sim_engine), headers=AUTH) as client:
        wait_ready(client)
        prompt = " ".join(f"w{i}" for i in range(40))  # more than two 16-token blocks
        r = client.post("/v1/completions", json={"model": "llama-3.1-8b", "prompt": prompt})
        assert r.status_code == 200
        page = client.get("/v1/kv_events", params={"after": -1, "limit": 1}).json()
        assert page["block_size"] == 16 and len(page["events"]) == 1
        assert page["events"][0]["kind"] == "stored"
        rest = client.get("/v1/kv_events", params={"after": page["next_after"]}).json()
        assert rest["events"] and rest["events"][0]["seq_no"] == page["next_after"] + 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"after": "x"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": MAX_KV_EVENTS_PAGE + 1}, "limit"),
        ({"after": -2}, "limit"),
    ],
)
def test_kv_events_parameters_are_checked(params: dict[str, object], param: str) -> None:
    with TestClient(create_app(SETTINGS, engine_factory=sim_engine), headers=AUTH) as client:
        r = client.get("/v1/kv_events", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
