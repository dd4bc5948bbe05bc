"""Errors a user or a caller can hit, each naming what was wrong and what to do.

Every error carries the offending ``field`` (a config key, a request parameter or a path)
so servers can map it to their own error shape (OpenAI's ``param``) without parsing text.
This module must not import anything outside the standard library.
"""

from __future__ import annotations


class ShipitError(Exception):
    """Base of every error shipit raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequestError(ShipitError):
    """A request parameter is out of range or inconsistent (HTTP 400)."""


class ContextLengthError(InvalidRequestError):
    """The prompt plus the requested tokens do not fit the model's context (HTTP 400)."""

    def __init__(self, *, prompt_tokens: int, max_model_len: int, max_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len
        self.max_tokens = max_tokens
        if prompt_tokens >= max_model_len:
            what = f"the prompt has {prompt_tokens} tokens"
        else:
            what = f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens})"
        super().__init__(
            f"{what}, but the model's context length is {max_model_len} tokens; "
            "shorten the prompt or lower max_tokens",
            field="prompt",
        )


class UnknownAdapterError(ShipitError):
    """A request names a LoRA adapter that is not loaded (HTTP 404)."""


class ModelLoadError(ShipitError):
    """A model or adapter could not be read: missing path, bad format, unsupported architecture."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickle checkpoint was offered; shipit only loads safetensors and GGUF."""


class CapacityError(ShipitError):
    """The engine cannot hold a request at all (e.g. it needs more KV blocks than exist)."""
