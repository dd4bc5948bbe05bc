"""Copy the schemas shipit's conformance tests need out of OpenAI's published ``openapi.yaml``.

Usage: ``uv run python tests/data/openai/extract_schemas.py PATH/TO/openapi.yaml``. Writes
``schemas.json`` beside this file: every schema named in ``ROOTS`` and every schema they refer to
(``#/components/schemas/...``), verbatim. Run by hand when OpenAI's schema is updated; the tests
read only ``schemas.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)
PREFIX = "#/components/schemas/"


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][len(PREFIX) :]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node)) if node else set()
    return set()


def main(source: str) -> None:
    spec = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = schemas[name]
            todo += sorted(refs(schemas[name]) - set(keep))
    out = {
        "source": "openai/openai-openapi openapi.yaml (MIT licence, see LICENSE beside this file)",
        "version": spec["info"]["version"],
        "schemas": dict(sorted(keep.items())),
    }
    target = Path(__file__).with_name("schemas.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{target}: {len(keep)} schemas")


if __name__ == "__main__":
    main(sys.argv[1])
