"""Errors as OpenAI error responses: which status each failure gets, and the body shape.

Owns the mapping from shipit's errors (which carry ``.field``) to HTTP status and
``{"error": {"message", "type", "param", "code"}}``: 400 invalid parameter, 400 context too
long (code ``context_length_exceeded`` with both lengths), 404 unknown model, 429 waiting
queue full, 503 loading or draining (with ``Retry-After``). It must not decide policy.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from shipit.core.errors import (
    CapacityError,
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    ShipitError,
    UnknownAdapterError,
)


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, type_=type_, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable(message: str, retry_after_s: int) -> JSONResponse:
    return error_response(
        503,
        message,
        type_="service_unavailable",
        code=503,
        headers={"Retry-After": str(retry_after_s)},
    )


def from_exception(exc: ShipitError) -> JSONResponse:
    """The response for an error raised while parsing or admitting a request."""
    if isinstance(exc, ContextLengthError):
        return error_response(
            400,
            exc.message,
            type_="invalid_request_error",
            param=exc.field,
            code="context_length_exceeded",
        )
    if isinstance(exc, UnknownAdapterError):
        return error_response(
            404, exc.message, type_="not_found_error", param=exc.field, code="model_not_found"
        )
    if isinstance(exc, CapacityError) and exc.field in ("max_waiting", "lora_name"):
        # The queue (or every adapter slot) is busy now; the same request succeeds later.
        return error_response(
            429,
            exc.message,
            type_="rate_limit_error",
            param=exc.field,
            code=429,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, CapacityError | InvalidRequestError | ModelLoadError):
        return error_response(
            400, exc.message, type_="invalid_request_error", param=exc.field, code=400
        )
    return error_response(500, exc.message, type_="internal_error", param=exc.field, code=500)
