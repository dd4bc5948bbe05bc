"""What the client raises, whatever the protocol: an answer that is an error (``APIError``,
with the HTTP status and ``Retry-After`` when the server gave one), no answer at all
(``APIConnectionError``) or no answer in time (``APITimeoutError``). ``retryable`` says which
the retry loop may try again."""

from __future__ import annotations

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ShipitClientError(Exception):
    """Base class of every error the client raises."""


class APIError(ShipitClientError):
    """The server answered with an error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        endpoint: str = "",
    ) -> None:
        super().__init__(f"HTTP {status} from {endpoint or 'the server'}: {message}")
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.endpoint = endpoint


class APIConnectionError(ShipitClientError):
    """No answer: the endpoint could not be reached, or the connection broke."""

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(f"{endpoint or 'the server'}: {message}")
        self.endpoint = endpoint


class APITimeoutError(APIConnectionError):
    """No answer within the timeout."""


def retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: connection errors, timeouts, 408, 429 and 5xx
    other than 501 (the request itself is fine; the server or the network was not)."""
    if isinstance(exc, APIConnectionError):
        return True
    return isinstance(exc, APIError) and exc.status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number; HTTP dates are not used by shipit)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
