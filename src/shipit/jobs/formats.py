"""OpenAI's wire shapes for files, batches and batch lines, and the checks on a batch input.

Owns: the records the store hands out (``FileRecord``, ``BatchRecord``, ``ItemRecord``,
``WorkItem``), their OpenAI JSON (``file_json``, ``batch_json``), parsing a completion window
(``"24h"``, ``"30m"``), validating a JSONL input file line by line (``parse_batch_input``:
``custom_id`` unique, ``method`` POST, ``url`` the batch's endpoint, ``body`` an object, no
streaming) and the output / error lines of a finished batch (``output_line``). Pure: no IO.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def window_seconds(window: str) -> int:
    """``"24h"`` -> 86400; raises ``ValueError`` with what is accepted."""
    m = _WINDOW.match(window)
    if m is None or int(m.group(1)) == 0:
        raise ValueError(
            f"completion_window must be a positive duration such as '24h', '30m' or '90s', "
            f"got {window!r}"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: int


def file_json(f: FileRecord) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str | None = None  # JSON list of {code, message, line, param}
    metadata: str | None = None  # JSON object
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None


def batch_json(b: BatchRecord) -> dict[str, Any]:
    errors = json.loads(b.errors) if b.errors else None
    return {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": json.loads(b.metadata) if b.metadata else None,
    }


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One valid input line: its 0-based position, ``custom_id``, endpoint and JSON body."""

    line: int
    custom_id: str
    url: str
    body: bytes


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str
    line: int  # 1-based, as OpenAI reports it

    def json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": None, "line": self.line}


def parse_batch_input(
    content: bytes,
    endpoint: str,
    *,
    max_errors: int = 20,
    allows: Callable[[str], bool] | None = None,
) -> tuple[list[BatchLine], list[LineError]]:
    """Every line of a batch input file, or why it cannot run (the batch then fails)."""
    lines: list[BatchLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for n, raw in enumerate(content.splitlines(), start=1):
        if len(errors) >= max_errors:
            break
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as exc:
            errors.append(LineError("invalid_json", f"line {n} is not JSON: {exc}", n))
            continue
        if not isinstance(item, dict):
            errors.append(LineError("invalid_request", f"line {n} is not a JSON object", n))
            continue
        custom_id = item.get("custom_id")
        why = None
        if not isinstance(custom_id, str) or not custom_id:
            why = "custom_id is required (a non-empty string)"
        elif custom_id in seen:
            why = f"custom_id {custom_id!r} is used twice; each line needs its own"
        elif item.get("method", "POST") != "POST":
            why = f"method must be POST, got {item.get('method')!r}"
        elif item.get("url") != endpoint:
            why = f"url must be the batch's endpoint {endpoint!r}, got {item.get('url')!r}"
        elif not isinstance(item.get("body"), dict):
            why = "body must be a JSON object (the request to send)"
        elif item["body"].get("stream"):
            why = "body.stream is not supported in a batch; drop it"
        elif allows is not None and not allows(str(item["body"].get("model", ""))):
            why = f"this key may not use the model {item['body'].get('model')!r}"
        if why is not None:
            code = "duplicate_custom_id" if "used twice" in why else "invalid_request"
            code = "model_not_allowed" if "may not use" in why else code
            errors.append(LineError(code, f"line {n}: {why}", n))
            continue
        assert isinstance(custom_id, str)
        seen.add(custom_id)
        lines.append(BatchLine(len(lines), custom_id, endpoint, json.dumps(item["body"]).encode()))
    if not lines and not errors:
        errors.append(LineError("empty_file", "the input file has no request lines", 0))
    return lines, errors


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One unit of work: a batch line, or a single async request (``batch_id`` None)."""

    id: str
    tenant: str
    batch_id: str | None
    line: int
    custom_id: str | None
    url: str
    state: str  # queued, running, done, cancelled, expired
    attempts: int
    status_code: int | None
    response: bytes | None
    created_at: float
    done_at: float | None
    webhook_url: str | None = None
    webhook_state: str | None = None  # pending, delivered, failed


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A claimed item, as the worker runs it."""

    id: str
    tenant: str
    url: str
    body: bytes
    attempts: int  # claims so far, this one included


def _json_or_text(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def output_line(item: ItemRecord) -> tuple[bool, bytes]:
    """The item's line in the batch's output (True) or error file (False)."""
    response = None
    error = None
    if item.state == "done" and item.status_code is not None:
        response = {
            "status_code": item.status_code,
            "request_id": item.id,
            "body": _json_or_text(item.response),
        }
        if item.status_code >= 400:
            error = {"code": f"http_{item.status_code}", "message": "the request failed"}
    elif item.state == "expired":
        msg = "This request could not be executed before the completion window expired."
        error = {"code": "batch_expired", "message": msg}
    else:
        error = {"code": "batch_cancelled", "message": "This request was cancelled."}
    ok = error is None
    line = {"id": item.id, "custom_id": item.custom_id, "response": response, "error": error}
    return ok, json.dumps(line).encode() + b"\n"


def async_json(item: ItemRecord) -> dict[str, Any]:
    """A single async request as ``GET /v1/async/{id}`` shows it."""
    status = {"queued": "queued", "running": "in_progress", "cancelled": "cancelled"}.get(
        item.state
    )
    if status is None:
        ok = item.status_code is not None and item.status_code < 400
        status = "completed" if ok else "failed"
    out: dict[str, Any] = {
        "id": item.id,
        "object": "async_request",
        "endpoint": item.url,
        "status": status,
        "created_at": int(item.created_at),
        "completed_at": int(item.done_at) if item.done_at is not None else None,
        "attempts": item.attempts,
        "status_code": item.status_code,
        "webhook": {"url": item.webhook_url, "state": item.webhook_state}
        if item.webhook_url
        else None,
    }
    if item.state == "done":
        out["response"] = _json_or_text(item.response)
    return out
