"""Schemathesis against a replica, from the replica's own ``/openapi.json``: no generated
request (valid by the schema, or deliberately not) may get a 5xx.

The replica is the simulated engine (no-op sleep, a 256-token context so any ``max_tokens``
finishes quickly) under uvicorn on 127.0.0.1 in a thread; every request carries the admin
token so the admin routes are fuzzed too. Bounded by ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.app import create_app
from shipit.replica.openapi import openapi_document
from shipit.replica.settings import ReplicaSettings

TOKEN = "fuzz-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = int(os.environ.get("SHIPIT_FUZZ_EXAMPLES", "25"))

schema = schemathesis.openapi.from_dict(json.loads(openapi_document()))


def sim_engine(settings: ReplicaSettings) -> LLMEngine:
    config = EngineConfig(max_model_len=256, max_num_seqs=8)
    return build_simulated_engine("H100:llama-3.1-8b", config, sleep=lambda s: None)


@pytest.fixture(scope="module")
def replica_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("lora-root")
    replica_settings = ReplicaSettings(
        model="llama-3.1-8b",
        simulate="H100:llama-3.1-8b",
        admin_token=TOKEN,
        enable_lora_loading=True,
        lora_roots=(str(root),),
        max_body_bytes=256 * 1024,
    )
    app = create_app(replica_settings, engine_factory=sim_engine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_the_served_document_is_the_packaged_one(replica_url: str) -> None:
    served = httpx.get(replica_url + "/openapi.json")
    assert served.status_code == 200
    doc = served.json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/chat/completions" in doc["paths"]
    assert doc["paths"]["/v1/kv_events"]["get"]["security"] == [{"adminToken": []}]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_generated_request_gets_a_5xx(case: schemathesis.Case, replica_url: str) -> None:
    response = case.call(base_url=replica_url, headers=AUTH, timeout=30)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
