"""The gateway's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The paths, the shipit request headers, query parameters and response shapes are written here;
the request bodies are the replicas' (``shipit up`` passes in the schemas the replica parses
with, ``replica.openapi.request_schemas``), since the gateway forwards a body unchanged to a
replica that accepts exactly those. Without them (a gateway built bare, as in unit tests) a
body is described as any JSON object. Fuzzers (schemathesis in the test suite) read this
document to generate requests. It must not touch HTTP objects or routers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shipit.config.gateway import ROUTING_POLICIES
from shipit.core import openai_errors as oe

_REF = "#/components/schemas/{name}"
_OBJECT: dict[str, Any] = {"type": "object"}
_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string", "enum": sorted(k.code for k in oe.VOCABULARY)},
            },
        }
    },
}


def _headers(priority_range: tuple[int, int], max_deadline_ms: int) -> list[dict[str, Any]]:
    lo, hi = priority_range
    return [
        {
            "name": "x-shipit-priority",
            "in": "header",
            "required": False,
            "description": "Scheduling priority (lower is served first); with API keys, the "
            "tenant's range applies.",
            "schema": {"type": "integer", "minimum": lo, "maximum": hi},
        },
        {
            "name": "x-shipit-deadline-ms",
            "in": "header",
            "required": False,
            "description": "Give up (504) when the request has not started within this many ms.",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_deadline_ms},
        },
        {
            "name": "x-shipit-routing",
            "in": "header",
            "required": False,
            "description": "Routing policy for this request (admin keys, or tenants allowed).",
            "schema": {"type": "string", "enum": sorted(ROUTING_POLICIES)},
        },
    ]


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": dict(schema)}}}


def _responses(*, sse: bool = False, text: bool = False) -> dict[str, Any]:
    success: dict[str, Any]
    if text:
        success = {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        success = {"description": "the result", **_json(_OBJECT)}
    if sse:
        success["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    error = {
        "description": "an error, in OpenAI's shape",
        **_json({"$ref": "#/components/schemas/Error"}),
    }
    return {"200": success, "4XX": error, "5XX": error}


def _post(summary: str, body: Mapping[str, Any], *, sse: bool = False, **extra: Any) -> Any:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_json(body)},
            "responses": _responses(sse=sse),
            **extra,
        }
    }


def _get(summary: str, *, text: bool = False, **extra: Any) -> Any:
    return {"get": {"summary": summary, "responses": _responses(text=text), **extra}}


def openapi_document(
    request_schemas: Mapping[str, Any] | None = None,
    *,
    priority_range: tuple[int, int] = (-1000, 1000),
    max_deadline_ms: int = 86_400_000,
) -> bytes:
    """The document as JSON bytes; ``request_schemas`` are the body components by name
    (``CompletionBody``, ``ChatBody``, ``TokenizeCompletionBody``, ``TokenizeChatBody``,
    ``DetokenizeBody`` and whatever they refer to); the header ranges are the gateway's
    settings (``gateway.auth.priority_range``, ``gateway.limits.max_deadline_ms``)."""
    headers = _headers(priority_range, max_deadline_ms)
    schemas: dict[str, Any] = {**(request_schemas or {}), "Error": _ERROR}

    def body(name: str) -> dict[str, Any]:
        return {"$ref": _REF.format(name=name)} if name in schemas else dict(_OBJECT)

    tokenize = {"oneOf": [body("TokenizeCompletionBody"), body("TokenizeChatBody")]}
    if tokenize["oneOf"] == [_OBJECT, _OBJECT]:
        tokenize = dict(_OBJECT)
    model_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    ready_params = [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "wait_s",
            "in": "query",
            "required": False,
            "schema": {"type": "number", "minimum": 0, "maximum": 600},
        },
    ]
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "shipit gateway",
            "version": "1",
            "description": "OpenAI-compatible completions and chat routed over a fleet of "
            "replicas, vLLM's tokenizer endpoints, the model list, health and readiness.",
        },
        "paths": {
            "/v1/completions": _post(
                "Text completion", body("CompletionBody"), sse=True, parameters=headers
            ),
            "/v1/chat/completions": _post(
                "Chat completion", body("ChatBody"), sse=True, parameters=headers
            ),
            "/tokenize": _post("Tokenize a prompt or a chat", tokenize),
            "/detokenize": _post("Token ids to text", body("DetokenizeBody")),
            "/v1/models": _get("The served models and their adapters"),
            "/v1/models/{id}": _get("One model card", parameters=model_param),
            "/health": _get("200 while a replica is ready, else 503"),
            "/shipit/ready": _get(
                "200 once a replica of every model (or of `model`) is ready, waiting up to "
                "`wait_s` seconds; else 503",
                parameters=ready_params,
            ),
            "/metrics": _get("Prometheus metrics", text=True),
            "/openapi.json": _get("This document"),
        },
        "components": {"schemas": schemas},
    }
    return json.dumps(doc, sort_keys=True).encode()
