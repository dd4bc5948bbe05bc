"""Errors a user or a caller can hit, each naming what was wrong and what to do.

Every error carries the offending ``field`` (a config key, a request parameter or a path)
so servers can map it to their own error shape (OpenAI's ``param``) without parsing text, and
may carry a ``code`` from the OpenAI error vocabulary (``core.openai_errors``) when its class
alone does not say which (``unknown_parameter``, ``invalid_type``...). This module must not
import anything outside the standard library.
"""

from __future__ import annotations


class ShipitError(Exception):
    """Base of every error shipit raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class InvalidRequestError(ShipitError):
    """A request parameter is out of range or inconsistent (HTTP 400)."""


class ContextLengthError(InvalidRequestError):
    """The prompt plus the requested tokens do not fit the model's context (HTTP 400).

    ``field`` names where the prompt came from (``prompt`` or ``messages``); the message gives
    the limit, the request's total and its two parts, as OpenAI's does.
    """

    def __init__(
        self,
        *,
        prompt_tokens: int,
        max_model_len: int,
        max_tokens: int = 0,
        field: str = "prompt",
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len
        self.max_tokens = max_tokens
        head = f"This model's maximum context length is {max_model_len} tokens; "
        if max_tokens <= 0:
            what = (
                f"your request has {prompt_tokens} tokens in the {field}, which leaves no "
                f"room for the completion. Shorten the {field}."
            )
        else:
            what = (
                f"your request has {prompt_tokens + max_tokens} tokens ({prompt_tokens} in "
                f"the {field}, {max_tokens} for the completion). Shorten the {field} or "
                "lower max_tokens."
            )
        super().__init__(head + what, field=field)


class UnknownAdapterError(ShipitError):
    """A request names a LoRA adapter that is not loaded (HTTP 404)."""


class ModelLoadError(ShipitError):
    """A model or adapter could not be read: missing path, bad format, unsupported architecture."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickle checkpoint was offered; shipit only loads safetensors and GGUF."""


class CapacityError(ShipitError):
    """The engine cannot hold a request at all (e.g. it needs more KV blocks than exist)."""
