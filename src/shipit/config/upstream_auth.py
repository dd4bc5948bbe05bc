"""Credentials the gateway sends to a deployment's replicas (a vLLM started with ``--api-key``).

Owns the ``upstream_auth`` section of a deployment and ``resolve_upstream_auth``, which reads
the secrets once, when the gateway starts: a bearer token from an environment variable or a
file, and extra headers whose values are literal or read from a variable or file. A missing
variable or file is a ``ConfigError`` naming it. The config itself holds only names and paths;
the values live in ``UpstreamHeaders``, whose ``repr`` shows header names only, so that no
secret reaches a log, ``/shipit/status``, a metric label or an error message. Example::

    deployments:
      - name: default
        replica_urls: [http://10.0.0.5:8000/v1]
        upstream_auth:
          bearer_token_env: VLLM_API_KEY     # or bearer_token_file: /run/secrets/vllm
          headers: {x-team: search, x-extra-key: {env: EXTRA_KEY}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipit.core.errors import ShipitError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """A header value read at start: from the environment (``env``) or a file (``file``)."""

    env: str | None = Field(None, description="environment variable holding the value")
    file: str | None = Field(None, description="file holding the value (trailing newline cut)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file for a header value")
        return self


class UpstreamAuthConfig(_Strict):
    """What every proxied request to this deployment's replicas carries."""

    bearer_token_env: str | None = Field(
        None, description="environment variable holding the replicas' API key (Bearer)"
    )
    bearer_token_file: str | None = Field(
        None, description="file holding the replicas' API key (Bearer)"
    )
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="extra headers: a literal value, or {env: NAME} / {file: PATH}",
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        if self.bearer_token_env is not None and self.bearer_token_file is not None:
            raise ValueError(
                "upstream_auth: give bearer_token_env or bearer_token_file, not both "
                f"(got {self.bearer_token_env!r} and {self.bearer_token_file!r})"
            )
        for name in self.headers:
            if name.lower() in ("content-type", "x-request-id", "content-length"):
                raise ValueError(f"upstream_auth.headers: {name!r} is set by the gateway; drop it")
        return self


class UpstreamAuthError(ShipitError):
    """A credential named in ``upstream_auth`` cannot be read."""


class UpstreamHeaders:
    """Resolved headers for one deployment's replicas. Never printed with their values."""

    __slots__ = ("headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers: dict[str, str] = dict(headers)

    def __bool__(self) -> bool:
        return bool(self.headers)

    def __repr__(self) -> str:
        return f"UpstreamHeaders({', '.join(sorted(self.headers))} (values redacted))"

    __str__ = __repr__


def _read(
    deployment: str, what: str, *, env: str | None, file: str | None, environ: Mapping[str, str]
) -> str:
    where = f"deployments[{deployment}].upstream_auth.{what}"
    if env is not None:
        value = environ.get(env)
        if not value:
            raise UpstreamAuthError(
                f"{where} names the environment variable {env!r}, which is not set (or empty); "
                f"export {env} before starting the gateway",
                field=where,
            )
        return value
    assert file is not None
    try:
        value = Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UpstreamAuthError(
            f"{where} names the file {file!r}, which cannot be read ({exc.strerror}); "
            "check the path and its permissions",
            field=where,
        ) from None
    if not value:
        raise UpstreamAuthError(f"{where}: the file {file!r} is empty", field=where)
    return value


def resolve_upstream_auth(
    auth: UpstreamAuthConfig | None,
    *,
    deployment: str,
    environ: Mapping[str, str] | None = None,
) -> UpstreamHeaders:
    """Read the secrets ``auth`` names (once, at start); empty without ``upstream_auth``."""
    if auth is None:
        return UpstreamHeaders({})
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    for name, value in auth.headers.items():
        if isinstance(value, SecretRef):
            value = _read(
                deployment, f"headers.{name}", env=value.env, file=value.file, environ=env
            )
        headers[name.lower()] = value
    if auth.bearer_token_env is not None or auth.bearer_token_file is not None:
        what = "bearer_token_env" if auth.bearer_token_env is not None else "bearer_token_file"
        token = _read(
            deployment, what, env=auth.bearer_token_env, file=auth.bearer_token_file, environ=env
        )
        headers["authorization"] = f"Bearer {token}"
    return UpstreamHeaders(headers)
