"""Errors as OpenAI error responses at the replica's edge.

Turns a kind from the shared vocabulary (``core.openai_errors``: status, ``type``, string
``code``) into a JSON response: 400 invalid parameter, 400 context too long
(``context_length_exceeded``), 404 unknown model or path, 405 wrong method, 429 waiting queue
full, 503 loading or draining (with ``Retry-After``), 500 a failed step. It must not decide
policy, and must not invent types or codes outside the vocabulary.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError


def error_body(message: str, kind: oe.ErrorKind, param: str | None = None) -> dict[str, Any]:
    return oe.error_body(message, kind, param)


def error_response(
    kind: oe.ErrorKind,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        oe.error_body(message, kind, param), status_code=kind.status, headers=headers
    )


def unavailable(message: str, retry_after_s: int) -> JSONResponse:
    return error_response(oe.UNAVAILABLE, message, headers={"Retry-After": str(retry_after_s)})


def from_exception(exc: ShipitError) -> JSONResponse:
    """The response for an error raised while parsing or admitting a request."""
    kind = oe.kind_of(exc)
    headers = {"Retry-After": "1"} if kind.status == 429 else None
    return error_response(kind, exc.message, param=exc.field, headers=headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such path) and 405 (the path takes another method), in
    OpenAI's shape; a 405 also says which methods the path takes."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error_response(
            oe.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {path}; use {allowed or 'another method'}",
            headers={"Allow": allowed} if allowed else None,
        )
    if exc.status_code == 404:
        return error_response(oe.PATH_NOT_FOUND, f"{request.method} {path}: no such endpoint")
    return error_response(oe.INVALID_VALUE, str(exc.detail))
