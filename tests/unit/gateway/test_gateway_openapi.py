"""The gateway's ``/openapi.json``, and refusals the fuzzers found on paths the edge does not
parse (``/tokenize``, ``/detokenize``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.gateway.openapi import openapi_document
from shipit.replica.openapi import request_schemas
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call


def make(**kwargs: object) -> tuple[Gateway, FakeUpstream]:
    cfg = parse_config({"deployments": [{"name": "default", "model": "m", "replicas": 0}]})
    upstream = FakeUpstream({"http://a": FakeReplica()})
    gw = create_gateway(
        cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False, **kwargs
    )
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    return gw, upstream


def test_the_document_is_served_with_the_bodies_it_was_given() -> None:
    gw, _ = make(request_schemas=request_schemas())

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "GET", "/openapi.json")
            assert res.status == 200
            doc = res.json()
            assert doc == json.loads(openapi_document(request_schemas()))
            body = doc["paths"]["/v1/completions"]["post"]["requestBody"]
            ref = body["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/CompletionBody"
            assert "prompt" in doc["components"]["schemas"]["CompletionBody"]["properties"]
            assert (await call(gw, "POST", "/openapi.json", {})).status == 405

    asyncio.run(go())


def test_a_bare_gateway_describes_bodies_as_objects() -> None:
    doc = json.loads(openapi_document())
    assert set(doc["components"]["schemas"]) == {"Error"}
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"type": "object"}
    assert {"/v1/models", "/v1/models/{id}", "/health", "/shipit/ready"} <= set(doc["paths"])


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_deeply_nested_json_on_the_tokenizer_paths_is_a_400_not_a_500(path: str) -> None:
    gw, upstream = make()
    deep = b'{"model": "m", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", path, deep)
            assert res.status == 400, res.body[:300]
            err = res.json()["error"]
            assert err["code"] == "invalid_json" and "nested" in err["message"]
            assert upstream.opened == []

    asyncio.run(go())
