"""OpenAI's published schemas (tests/data/openai/schemas.json) as JSON Schema validators.

``validator("CreateChatCompletionResponse").validate(body)`` raises ``jsonschema.ValidationError``
naming the first mismatch. OpenAPI 3.0's ``nullable: true`` becomes ``anyOf [schema, null]``.
Tests only."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).parents[1] / "data" / "openai" / "schemas.json"


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _components() -> dict[str, Any]:
    raw = json.loads(SCHEMAS.read_text(encoding="utf-8"))
    return {"schemas": _nullable(raw["schemas"])}


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    components = _components()
    if name not in components["schemas"]:
        raise KeyError(f"{name} is not in {SCHEMAS}; add it to extract_schemas.py's ROOTS")
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    cls = jsonschema.validators.validator_for(
        {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    )
    return cls(root)  # type: ignore[no-any-return]


def errors(name: str, instance: Any) -> list[str]:
    """Every mismatch, as 'path: message' lines (empty when the instance conforms)."""
    found = validator(name).iter_errors(instance)
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in found]
