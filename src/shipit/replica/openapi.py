"""The replica's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Request bodies are generated from the very models the replica parses with
(``replica.protocol``), so the document cannot drift from what is accepted; the paths, query
parameters, headers and response shapes are written here. Admin routes are marked with the
bearer-token security scheme. Fuzzers (schemathesis in the test suite) read this document to
generate requests. It must not touch HTTP objects or the engine.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic.json_schema import models_json_schema

from shipit.core import openai_errors as oe
from shipit.core.replica_admin import CACHE_SALT_HEADER
from shipit.replica import protocol

_REF = "#/components/schemas/{model}"
_BODIES: dict[str, type[protocol._Body]] = {
    "CompletionBody": protocol.CompletionBody,
    "ChatBody": protocol.ChatBody,
    "TokenizeCompletionBody": protocol.TokenizeCompletionBody,
    "TokenizeChatBody": protocol.TokenizeChatBody,
    "DetokenizeBody": protocol.DetokenizeBody,
    "LoadLoraBody": protocol.LoadLoraBody,
    "UnloadLoraBody": protocol.UnloadLoraBody,
}
_ERROR = {
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
_OBJECT = {"type": "object"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: str, ok_schema: dict[str, Any] | None = None, *, sse: bool = False) -> Any:
    success: dict[str, Any] = {"description": ok, **_json(ok_schema or _OBJECT)}
    if sse:
        success["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    error = {"description": "an error, in OpenAI's shape", **_json(_ref("Error"))}
    return {"200": success, "4XX": error, "5XX": error}


def _post(summary: str, body: Any, *, sse: bool = False, **extra: Any) -> Any:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_json(body)},
            "responses": _responses("the result", sse=sse),
            **extra,
        }
    }


def _get(summary: str, responses: Any | None = None, **extra: Any) -> Any:
    answers = responses or _responses("the result")
    return {"get": {"summary": summary, "responses": answers, **extra}}


_ADMIN: dict[str, Any] = {"security": [{"adminToken": []}]}
_SALT = {
    "name": CACHE_SALT_HEADER,
    "in": "header",
    "required": False,
    "description": "Prefix-cache salt set by the gateway; needs the admin token.",
    "schema": {"type": "string"},
}


@functools.cache
def request_schemas() -> dict[str, Any]:
    """The request bodies' JSON schemas, keyed by component name (``CompletionBody``,
    ``ChatBody``, the tokenizer and LoRA bodies and what they refer to), with ``Error``: the
    components of this document, also served in the gateway's."""
    _, defs = models_json_schema(
        [(model, "validation") for model in _BODIES.values()], ref_template=_REF
    )
    return {**defs.get("$defs", {}), "Error": _ERROR}


@functools.cache
def openapi_document() -> bytes:
    """The document as JSON bytes (built once per process)."""
    schemas = request_schemas()
    tokenize = {"oneOf": [_ref("TokenizeCompletionBody"), _ref("TokenizeChatBody")]}
    kv_params = [
        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": -1}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
        },
    ]
    model_param = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    text = {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "shipit replica",
            "version": "1",
            "description": "OpenAI-compatible completions and chat over one model, vLLM's "
            "tokenizer endpoints and metrics, and admin routes for the gateway.",
        },
        "paths": {
            "/v1/completions": _post(
                "Text completion", _ref("CompletionBody"), sse=True, parameters=[_SALT]
            ),
            "/v1/chat/completions": _post(
                "Chat completion", _ref("ChatBody"), sse=True, parameters=[_SALT]
            ),
            "/tokenize": _post("Tokenize a prompt or a chat", tokenize),
            "/detokenize": _post("Token ids to text", _ref("DetokenizeBody")),
            "/v1/models": _get("The base model and loaded LoRA adapters"),
            "/v1/models/{model}": _get("One model card", parameters=model_param),
            "/health": _get("200 when serving, 503 while loading or draining", text),
            "/metrics": _get("Prometheus metrics (vLLM's names)", text),
            "/openapi.json": _get("This document"),
            "/v1/load_lora_adapter": _post(
                "Load a LoRA adapter (admin)", _ref("LoadLoraBody"), **_ADMIN
            ),
            "/v1/unload_lora_adapter": _post(
                "Unload a LoRA adapter (admin)", _ref("UnloadLoraBody"), **_ADMIN
            ),
            "/v1/kv_events": _get("Prefix-cache events (admin)", parameters=kv_params, **_ADMIN),
            "/shipit/startup": _get("The cold start in phases (admin)", **_ADMIN),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
    return json.dumps(doc, sort_keys=True).encode()
