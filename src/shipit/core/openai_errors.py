"""The one error vocabulary of shipit's OpenAI-compatible servers: status, ``type`` and ``code``.

Every error body a replica or the gateway writes is ``{"error": {"message", "type", "param",
"code"}}`` with ``type`` one of four words (``invalid_request_error`` for 400, 401, 403, 405,
408, 409 and 413, ``not_found_error`` for 404, ``rate_limit_error`` for 429, ``server_error``
for every 5xx) and ``code`` always a short string from the table below (never an int, never
null), so clients and dashboards can branch on it. ``kind_of`` maps shipit's own errors
(``core.errors``) to a kind; servers only turn a kind into a response. Standard library
only; no HTTP objects here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipit.core.errors import (
    CapacityError,
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    ShipitError,
    UnknownAdapterError,
)

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """One row of the vocabulary: the HTTP status, OpenAI's ``type`` and our ``code``."""

    status: int
    type: str
    code: str


# 400: the request is wrong; the same request fails again.
INVALID_VALUE = ErrorKind(400, INVALID_REQUEST, "invalid_value")
INVALID_TYPE = ErrorKind(400, INVALID_REQUEST, "invalid_type")
INVALID_JSON = ErrorKind(400, INVALID_REQUEST, "invalid_json")
MISSING_PARAMETER = ErrorKind(400, INVALID_REQUEST, "missing_required_parameter")
UNKNOWN_PARAMETER = ErrorKind(400, INVALID_REQUEST, "unknown_parameter")
UNSUPPORTED_VALUE = ErrorKind(400, INVALID_REQUEST, "unsupported_value")
CONTEXT_LENGTH_EXCEEDED = ErrorKind(400, INVALID_REQUEST, "context_length_exceeded")
# 401 / 403: no valid API key, or the key may not do this (OpenAI's invalid_api_key).
INVALID_API_KEY = ErrorKind(401, INVALID_REQUEST, "invalid_api_key")
PERMISSION_DENIED = ErrorKind(403, INVALID_REQUEST, "permission_denied")
MODEL_NOT_ALLOWED = ErrorKind(403, INVALID_REQUEST, "model_not_allowed")
# 408 / 409 / 413: the request arrived too slowly, conflicts with the server's state, or is
# too large to read.
REQUEST_TIMEOUT = ErrorKind(408, INVALID_REQUEST, "request_timeout")
CONFLICT = ErrorKind(409, INVALID_REQUEST, "conflict")
REQUEST_TOO_LARGE = ErrorKind(413, INVALID_REQUEST, "request_too_large")
# 404 / 405: the model or the path is not here, or the path takes another method.
MODEL_NOT_FOUND = ErrorKind(404, NOT_FOUND, "model_not_found")
PATH_NOT_FOUND = ErrorKind(404, NOT_FOUND, "not_found")
METHOD_NOT_ALLOWED = ErrorKind(405, INVALID_REQUEST, "method_not_allowed")
# 429: busy now; the same request succeeds later (a Retry-After header says when to retry).
QUEUE_FULL = ErrorKind(429, RATE_LIMIT, "queue_full")
RATE_LIMITED = ErrorKind(429, RATE_LIMIT, "rate_limit_exceeded")
INSUFFICIENT_QUOTA = ErrorKind(429, RATE_LIMIT, "insufficient_quota")  # the budget is spent
# 5xx: our fault or a replica's; retrying elsewhere may help.
INTERNAL_ERROR = ErrorKind(500, SERVER_ERROR, "internal_error")
UPSTREAM_ERROR = ErrorKind(502, SERVER_ERROR, "upstream_error")
UNAVAILABLE = ErrorKind(503, SERVER_ERROR, "service_unavailable")
TIMEOUT = ErrorKind(504, SERVER_ERROR, "timeout")

VOCABULARY: tuple[ErrorKind, ...] = (
    INVALID_VALUE,
    INVALID_TYPE,
    INVALID_JSON,
    MISSING_PARAMETER,
    UNKNOWN_PARAMETER,
    UNSUPPORTED_VALUE,
    CONTEXT_LENGTH_EXCEEDED,
    INVALID_API_KEY,
    PERMISSION_DENIED,
    MODEL_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    CONFLICT,
    REQUEST_TOO_LARGE,
    MODEL_NOT_FOUND,
    PATH_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    QUEUE_FULL,
    RATE_LIMITED,
    INSUFFICIENT_QUOTA,
    INTERNAL_ERROR,
    UPSTREAM_ERROR,
    UNAVAILABLE,
    TIMEOUT,
)
_BY_CODE = {k.code: k for k in VOCABULARY}


def kind_for_code(code: str) -> ErrorKind:
    """The kind with this ``code``; ``KeyError`` names the known codes."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise KeyError(f"unknown error code {code!r}; known: {sorted(_BY_CODE)}") from None


_BY_STATUS = {
    400: INVALID_VALUE,
    401: INVALID_API_KEY,
    403: PERMISSION_DENIED,
    404: PATH_NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    408: REQUEST_TIMEOUT,
    409: CONFLICT,
    413: REQUEST_TOO_LARGE,
    429: RATE_LIMITED,
    500: INTERNAL_ERROR,
    502: UPSTREAM_ERROR,
    503: UNAVAILABLE,
    504: TIMEOUT,
}


def kind_for_status(status: int) -> ErrorKind:
    """The most general kind for an HTTP status alone (a body that named no kind): another
    4xx is ``invalid_value``, another 5xx ``upstream_error``."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return INVALID_VALUE if status < 500 else UPSTREAM_ERROR


def kind_of(exc: ShipitError) -> ErrorKind:
    """The kind a server answers with for one of shipit's errors.

    An error may name its own code (``ShipitError(code=...)``, e.g. ``unknown_parameter``);
    otherwise its class decides.
    """
    if exc.code is not None:
        return kind_for_code(exc.code)
    if isinstance(exc, ContextLengthError):
        return CONTEXT_LENGTH_EXCEEDED
    if isinstance(exc, UnknownAdapterError):
        return MODEL_NOT_FOUND
    if isinstance(exc, CapacityError) and exc.field in ("max_waiting", "lora_name"):
        # The queue (or every adapter slot) is busy now; the same request succeeds later.
        return QUEUE_FULL
    if isinstance(exc, CapacityError | InvalidRequestError | ModelLoadError):
        return INVALID_VALUE
    return INTERNAL_ERROR


def error_body(message: str, kind: ErrorKind, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind.type, "param": param, "code": kind.code}}
