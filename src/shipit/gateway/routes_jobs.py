"""HTTP routes of async jobs: OpenAI's Files and Batches API, and single async requests.

- ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files``,
  ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
- ``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``,
  ``POST /v1/batches/{id}/cancel``;
- ``POST /v1/async/chat/completions`` (or ``/v1/async/completions``): queue one request, 202
  with its id (``x-shipit-webhook-url`` asks for a signed callback when it finishes);
  ``GET /v1/async/{id}`` (status, and the answer once done), ``GET /v1/async/{id}/result``
  (the answer as the replica gave it), ``POST /v1/async/{id}/cancel``.

Everything is scoped to the tenant of the API key (the ``Principal`` that ``gateway.auth`` puts
in the scope; ``"default"`` with keys off): a tenant never sees another's files or jobs, and a
batch line may only name a model its tenant may use. It parses and answers; ``JobsService``
and the store do the work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from shipit.core import openai_errors as oe
from shipit.gateway.edge import PRINCIPAL
from shipit.gateway.errors import error_json
from shipit.gateway.jobs_service import JobsService
from shipit.gateway.proxy import Receive, Scope, Send, send_json
from shipit.jobs import formats
from shipit.jobs.sql import IdempotencyConflictError
from shipit.jobs.webhooks import check_url

PREFIXES = ("/v1/files", "/v1/batches", "/v1/async")
MAX_IDEMPOTENCY_KEY = 255
_ID = r"([A-Za-z0-9_\-]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/v1/files"), "upload"),
    ("GET", re.compile(r"/v1/files"), "list_files"),
    ("GET", re.compile(rf"/v1/files/{_ID}"), "get_file"),
    ("GET", re.compile(rf"/v1/files/{_ID}/content"), "file_content"),
    ("DELETE", re.compile(rf"/v1/files/{_ID}"), "delete_file"),
    ("POST", re.compile(r"/v1/batches"), "create_batch"),
    ("GET", re.compile(r"/v1/batches"), "list_batches"),
    ("GET", re.compile(rf"/v1/batches/{_ID}"), "get_batch"),
    ("POST", re.compile(rf"/v1/batches/{_ID}/cancel"), "cancel_batch"),
    ("POST", re.compile(r"/v1/async(?:/v1)?(/chat/completions|/completions)"), "submit"),
    ("GET", re.compile(rf"/v1/async/{_ID}"), "get_async"),
    ("GET", re.compile(rf"/v1/async/{_ID}/result"), "async_result"),
    ("POST", re.compile(rf"/v1/async/{_ID}/cancel"), "cancel_async"),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def _bad(message: str, param: str | None = None) -> HttpError:
    return HttpError(400, message, param=param)


def _missing(kind: str, ident: str) -> HttpError:
    return HttpError(404, f"No {kind} found with id {ident!r}.", param="id")


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a ``multipart/form-data`` body: name -> (filename, bytes)."""
    head = f"content-type: {content_type}\r\nmime-version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise _bad("the upload must be multipart/form-data with `file` and `purpose` fields")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            fields[name] = (part.get_filename(), data)
    return fields


class JobsApi:
    def __init__(self, service: JobsService) -> None:
        self.service = service
        self.config = service.config

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        try:
            if not self.config.enabled:
                raise HttpError(404, f"{path}: async jobs are off (jobs.enabled is false)")
            for verb, pattern, name in _ROUTES:
                m = pattern.fullmatch(path)
                if m is not None and verb == method:
                    args = [g for g in m.groups() if g is not None]
                    status, out = await getattr(self, name)(scope, receive, *args)
                    break
            else:
                raise HttpError(404, f"{method} {path} is not served here")
        except HttpError as exc:
            kind = {404: oe.PATH_NOT_FOUND, 409: oe.CONFLICT}.get(exc.status, oe.INVALID_VALUE)
            body = error_json(kind, exc.message, exc.param)
            await send_json(send, exc.status, body)
            return
        if isinstance(out, bytes):
            headers = [(b"content-type", b"application/octet-stream")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": out, "more_body": False})
        else:
            await send_json(send, status, json.dumps(out).encode())

    # ----- helpers -----------------------------------------------------------------------
    @staticmethod
    def tenant(scope: Scope) -> str:
        principal = scope.get(PRINCIPAL)
        return str(principal.tenant.name) if principal is not None else "default"

    @staticmethod
    def allows(scope: Scope) -> Callable[[str], bool] | None:
        """The models the key's tenant may use (None: any)."""
        principal = scope.get(PRINCIPAL)
        if principal is None or not principal.tenant.models:
            return None
        allows: Callable[[str], bool] = principal.tenant.allows_model
        return allows

    async def _body(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_file_bytes:
                raise HttpError(
                    413, f"the body is over jobs.max_file_bytes ({self.config.max_file_bytes})"
                )
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _json(self, receive: Receive) -> dict[str, Any]:
        try:
            data = json.loads(await self._body(receive))
        except ValueError as exc:
            raise _bad(f"the body is not valid JSON: {exc}", "body") from None
        if not isinstance(data, dict):
            raise _bad("the body must be a JSON object", "body")
        return data

    @staticmethod
    def _query(scope: Scope) -> tuple[int, str | None, dict[str, list[str]]]:
        q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        raw = q.get("limit", ["20"])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            raise _bad(f"limit must be an integer from 1 to 10000, got {raw!r}", "limit")
        return int(raw), q.get("after", [None])[0], q

    def _now(self) -> float:
        return self.service.wall()

    # ----- files -------------------------------------------------------------------------
    async def upload(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        fields = parse_multipart(headers.get("content-type", ""), await self._body(receive))
        if "file" not in fields:
            raise _bad("the upload has no `file` field", "file")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            raise _bad(f"purpose must be 'batch' (the only one served), got {purpose!r}", "purpose")
        filename, content = fields["file"]
        jobs = self.service.open()
        rec = await jobs.call(
            jobs.store.put_file,
            self.tenant(scope),
            filename or "upload.jsonl",
            purpose,
            content,
            self._now(),
        )
        return 200, formats.file_json(rec)

    async def list_files(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        limit, after, q = self._query(scope)
        jobs = self.service.open()
        purpose = q.get("purpose", [None])[0]
        recs = await jobs.call(jobs.store.list_files, self.tenant(scope), purpose, limit + 1, after)
        data = [formats.file_json(r) for r in recs[:limit]]
        return 200, _page(data, more=len(recs) > limit)

    async def get_file(self, scope: Scope, receive: Receive, file_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        rec = await jobs.call(jobs.store.get_file, self.tenant(scope), file_id)
        if rec is None:
            raise _missing("file", file_id)
        return 200, formats.file_json(rec)

    async def file_content(self, scope: Scope, receive: Receive, file_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        content = await jobs.call(jobs.store.file_content, self.tenant(scope), file_id)
        if content is None:
            raise _missing("file", file_id)
        return 200, content

    async def delete_file(self, scope: Scope, receive: Receive, file_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        if not await jobs.call(jobs.store.delete_file, self.tenant(scope), file_id):
            raise _missing("file", file_id)
        return 200, {"id": file_id, "object": "file", "deleted": True}

    # ----- batches -----------------------------------------------------------------------
    async def create_batch(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        data = await self._json(receive)
        input_file_id = data.get("input_file_id")
        if not isinstance(input_file_id, str):
            raise _bad("input_file_id is required (the id of an uploaded file)", "input_file_id")
        endpoint = data.get("endpoint")
        if endpoint not in formats.ENDPOINTS:
            raise _bad(
                f"endpoint must be one of {list(formats.ENDPOINTS)}, got {endpoint!r}", "endpoint"
            )
        window = data.get("completion_window", "24h")
        try:
            formats.window_seconds(str(window))
        except ValueError as exc:
            raise _bad(str(exc), "completion_window") from None
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise _bad("metadata must be an object of strings", "metadata")
        jobs = self.service.open()
        try:
            batch = await jobs.call(
                jobs.store.create_batch,
                self.tenant(scope),
                input_file_id,
                endpoint,
                str(window),
                metadata,
                self._now(),
                self.allows(scope),
            )
        except KeyError:
            raise _missing("file", input_file_id) from None
        self.service.wake()
        return 200, formats.batch_json(batch)

    async def list_batches(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        limit, after, _ = self._query(scope)
        jobs = self.service.open()
        recs = await jobs.call(jobs.store.list_batches, self.tenant(scope), limit + 1, after)
        data = [formats.batch_json(r) for r in recs[:limit]]
        return 200, _page(data, more=len(recs) > limit)

    async def get_batch(self, scope: Scope, receive: Receive, batch_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        rec = await jobs.call(jobs.store.get_batch, self.tenant(scope), batch_id)
        if rec is None:
            raise _missing("batch", batch_id)
        return 200, formats.batch_json(rec)

    async def cancel_batch(self, scope: Scope, receive: Receive, batch_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        rec = await jobs.call(jobs.store.cancel_batch, self.tenant(scope), batch_id, self._now())
        if rec is None:
            raise _missing("batch", batch_id)
        self.service.wake()
        return 200, formats.batch_json(rec)

    # ----- single async requests ---------------------------------------------------------
    async def submit(self, scope: Scope, receive: Receive, endpoint: str) -> tuple[int, Any]:
        data = await self._json(receive)
        if not isinstance(data.get("model"), str):
            raise _bad("`model` is required (a string)", "model")
        if data.get("stream"):
            raise _bad("stream is not supported for async requests; drop it", "stream")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        webhook = headers.get("x-shipit-webhook-url") or None
        if webhook is not None:
            why = check_url(
                self.config.webhook, webhook, secret_set=self.service.webhooks is not None
            )
            if why is not None:
                raise _bad(why, "x-shipit-webhook-url")
        key = headers.get("idempotency-key") or None
        if key is not None and (len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable()):
            raise _bad(
                f"Idempotency-Key must be printable and at most {MAX_IDEMPOTENCY_KEY} "
                f"characters (got {len(key)}); a UUID is a good key",
                "idempotency-key",
            )
        jobs = self.service.open()
        body = json.dumps(data, sort_keys=True).encode()
        try:
            item, replayed = await jobs.call(
                jobs.store.submit,
                self.tenant(scope),
                "/v1" + endpoint,
                body,
                webhook,
                self._now(),
                key,
            )
        except IdempotencyConflictError as exc:
            raise HttpError(409, str(exc), param="idempotency-key") from None
        if not replayed:
            self.service.wake()
        return 202, formats.async_json(item)

    async def get_async(self, scope: Scope, receive: Receive, item_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        item = await jobs.call(jobs.store.get_item, self.tenant(scope), item_id)
        if item is None:
            raise _missing("async request", item_id)
        return 200, formats.async_json(item)

    async def async_result(self, scope: Scope, receive: Receive, item_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        item = await jobs.call(jobs.store.get_item, self.tenant(scope), item_id)
        if item is None:
            raise _missing("async request", item_id)
        if item.state != "done" or item.status_code is None:
            status = formats.async_json(item)["status"]
            raise HttpError(
                409,
                f"async request {item_id} is {status}, not finished: poll GET /v1/async/{item_id}",
            )
        try:
            return item.status_code, json.loads(item.response or b"null")
        except ValueError:
            return item.status_code, item.response or b""

    async def cancel_async(self, scope: Scope, receive: Receive, item_id: str) -> tuple[int, Any]:
        jobs = self.service.open()
        item = await jobs.call(jobs.store.cancel_item, self.tenant(scope), item_id, self._now())
        if item is None:
            raise _missing("async request", item_id)
        return 200, formats.async_json(item)


def _page(data: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }
