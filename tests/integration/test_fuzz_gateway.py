"""Schemathesis against a real ``shipit up`` (two simulated replicas), from the gateway's own
``/openapi.json``: no generated request (valid by the schema, or deliberately not) may get a
5xx, and the fuzzing must not eject a replica or leave one unready.

Bounded by ``MAX_EXAMPLES`` per operation (``SHIPIT_FUZZ_EXAMPLES`` raises it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shipit.gateway.openapi import openapi_document
from shipit.replica.openapi import request_schemas
from support.up_process import SIM_MODEL, Up, start_up

MAX_EXAMPLES = int(os.environ.get("SHIPIT_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    # A short context, so that a generated request without max_tokens finishes quickly.
    args = ["--log-level", "warning", "--max-model-len", "256"]
    u = start_up(tmp_path_factory.mktemp("up"), replicas=2, extra={"replica_args": args})
    yield u
    u.stop()


# The document ``shipit up`` serves (the first test checks that it is this one).
DOCUMENT = json.loads(openapi_document(request_schemas()))
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_served_document_describes_the_proxied_api(up: Up) -> None:
    served = httpx.get(up.url + "/openapi.json", timeout=10)
    assert served.status_code == 200
    doc = served.json()
    assert doc == DOCUMENT
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    assert {"/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"} <= paths
    assert {"/v1/models", "/v1/models/{id}", "/health", "/shipit/ready"} <= paths
    # The request bodies are the replica's, not a bare "object".
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert chat["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatBody"
    }
    assert "messages" in doc["components"]["schemas"]["ChatBody"]["properties"]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_generated_request_gets_a_5xx(case: schemathesis.Case, up: Up) -> None:
    # A generated model name is almost never served (a 404 before anything else is read):
    # name the served model instead, so that the rest of the body reaches the gateway's checks
    # and a replica. Models of the wrong type are left as generated.
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = SIM_MODEL
    response = case.call(base_url=up.url, timeout=30)
    if response.status_code == 504 and "x-shipit-deadline-ms" in (case.headers or {}):
        # The client's own deadline passed before the request started: the documented 504.
        assert response.json()["error"]["code"] == "timeout", response.text
        return
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])


def test_fuzzing_ejected_no_replica(up: Up, tmp_path: Path) -> None:
    # Runs after the fuzzing (file order): every replica still ready, none ejected.
    status = up.status()
    replicas = [r for d in status["deployments"] for r in d["replicas"]]
    assert len(replicas) == up.replicas
    assert all(r["state"] == "ready" and r["ejected_until_s"] is None for r in replicas), replicas
    metrics = httpx.get(up.url + "/metrics", timeout=10).text
    ejections = [
        line
        for line in metrics.splitlines()
        if line.startswith("shipit_outlier_ejections_total{") and not line.endswith(" 0.0")
    ]
    assert not ejections, ejections
