"""The console's JSON API over the capacity planner: the catalog, the VRAM plan, the ranking.

Each handler turns what a page (or ``curl``) sent, a query string or a JSON object, into the
same ``capacity.VramQuery`` / ``capacity.RecommendQuery`` that ``shipit plan`` builds from its
flags and calls the same ``answer_vram`` / ``answer_recommend``, so a figure on a page is the
figure ``shipit plan ... --output json`` prints (same rounding: ``core.jsonable``). The model
is a catalog id or a pasted Hugging Face ``config.json`` object, never a path: a web request
must not make the server read its own files. Refusals are ``ConsoleError`` (400) naming the
field, the value and what to give instead. No HTTP here: ``console.app`` does that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shipit import capacity as cap
from shipit.core.errors import ShipitError
from shipit.core.jsonable import jsonable

# Fields a query string may carry as a comma-separated list.
_LIST_FIELDS = frozenset({"providers", "dtypes"})
DEFAULT_TOP = 20
MAX_TOP = 500


class ConsoleError(Exception):
    """Bad input to the console's API: a 400 whose message says what to change."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def catalog_summary(catalog: cap.Catalog) -> dict[str, Any]:
    """What the pages offer in their pickers: models, GPUs, precisions and providers."""
    return {
        "models": [
            {
                "id": m.id,
                "name": m.name,
                "max_context": m.max_context,
                "native_dtype": m.native_dtype,
                "params_b": round(cap.total_params(m) / 1e9, 2),
            }
            for m in catalog.models
        ],
        "gpus": [
            {"id": g.id, "name": g.name, "memory_gib": g.memory_gib, "max_tp": g.max_tp}
            for g in catalog.gpus
        ],
        "dtypes": list(cap.WEIGHT_DTYPES),
        "default_dtypes": list(cap.RecommendQuery.model_fields["dtypes"].default),
        "kv_dtypes": ["auto", *cap.KV_DTYPE_BYTES],
        "providers": [p.id for p in catalog.providers],
    }


def _from_query(query: Mapping[str, str]) -> dict[str, Any]:
    """Query-string values as the JSON body would hold them (lists split on commas; empty
    values dropped so a blank form field means the default)."""
    out: dict[str, Any] = {}
    for key, value in query.items():
        if value.strip() == "":
            continue
        if key in _LIST_FIELDS:
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out[key] = value
    return out


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ConsoleError(f"the body is not JSON ({exc}); send a JSON object", "body") from exc
    if not isinstance(data, dict):
        raise ConsoleError(
            f"the body must be a JSON object, got {type(data).__name__}; "
            'e.g. {"model": "llama-3.1-8b", "gpu": "h100"}',
            "body",
        )
    return data


def _model(catalog: cap.Catalog, data: dict[str, Any]) -> cap.ModelSpec:
    """``hf_config`` (a pasted config.json: object or its text) wins over ``model`` (an id)."""
    raw = data.pop("hf_config", None)
    name = data.pop("model", None)
    if raw not in (None, ""):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise ConsoleError(
                    f"hf_config is not valid JSON ({exc}); paste the whole config.json",
                    "hf_config",
                ) from exc
        if not isinstance(raw, dict):
            raise ConsoleError("hf_config must be a JSON object (a config.json)", "hf_config")
        try:
            return cap.model_from_hf_config(raw, source="pasted config.json")
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ConsoleError(
                f"pasted config.json: a value has the wrong type ({exc}); "
                "sizes and counts must be whole numbers",
                "hf_config",
            ) from exc
    if not isinstance(name, str) or not name.strip():
        ids = ", ".join(m.id for m in catalog.models[:6])
        raise ConsoleError(
            f"model is missing (got {name!r}); give a catalog id ({ids}, ...) "
            "or paste a config.json as hf_config",
            "model",
        )
    return catalog.model(name)


def _top(data: dict[str, Any]) -> int:
    raw = data.pop("top", DEFAULT_TOP)
    try:
        top = int(raw)
    except (TypeError, ValueError):
        top = 0
    if not 1 <= top <= MAX_TOP:
        raise ConsoleError(f"top must be a whole number from 1 to {MAX_TOP}, got {raw!r}", "top")
    return top


def _answer(fn: Any) -> Any:
    """Run a planner call; its refusals become ``ConsoleError`` with the same words."""
    try:
        return fn()
    except ValidationError as exc:
        err = cap.explain_invalid(exc)
        raise ConsoleError(err.message, err.field) from exc
    except ShipitError as exc:
        raise ConsoleError(exc.message, exc.field) from exc


def vram(
    catalog: cap.Catalog, query: Mapping[str, str], body: dict[str, Any] | None
) -> dict[str, Any]:
    """``/ui/api/vram``: the plan ``shipit plan vram -o json`` prints, and its stacked bar."""
    data = dict(body) if body is not None else _from_query(query)
    model = _answer(lambda: _model(catalog, data))
    q: cap.VramQuery = _answer(lambda: cap.VramQuery.model_validate(data))
    d, plan = _answer(lambda: cap.answer_vram(catalog, model, q))
    return {
        "model": {"id": model.id, "source": model.source, "max_context": model.max_context},
        "label": d.label(),
        "query": q.model_dump(),
        "plan": jsonable(plan),
        "segments": jsonable(cap.vram_segments(plan)),
    }


def recommend(
    catalog: cap.Catalog, query: Mapping[str, str], body: dict[str, Any] | None
) -> dict[str, Any]:
    """``/ui/api/recommend``: the ranking ``shipit plan recommend -o json`` prints (its
    first ``top`` rows; ``count`` is how many there are in all)."""
    data = dict(body) if body is not None else _from_query(query)
    top = _answer(lambda: _top(data))
    model = _answer(lambda: _model(catalog, data))
    q: cap.RecommendQuery = _answer(lambda: cap.RecommendQuery.model_validate(data))
    res: cap.RecommendResult = _answer(lambda: cap.answer_recommend(catalog, model, q))
    return {
        "model": {"id": model.id, "source": model.source},
        "query": {**q.model_dump(), "mean_rps": q.mean_rps},
        "count": len(res.rows),
        "rows": jsonable(res.rows[:top]),
        "rejected": list(res.rejected),
    }
