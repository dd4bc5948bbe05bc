"""The gateway's security settings in ``shipit.yaml``: API keys, edge limits, TLS, audit log.

Owns the pydantic models nested under ``gateway:`` (``auth``, ``limits``, ``tls``) and the one
rule that decides whether keys are required: off by default on a loopback address, on
everywhere else unless ``auth: {required: false}`` (or ``shipit up --no-auth``) says so.
It must not read key files or open sockets.

Example::

    gateway:
      host: 0.0.0.0
      auth: {keys_file: /etc/shipit/keys.json, metrics: admin}
      limits: {max_body_bytes: 4194304, header_timeout_s: 10}
      tls: {cert: /etc/shipit/tls.crt, key: /etc/shipit/tls.key}
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Strict):
    required: bool | None = Field(
        None,
        description="null: required unless the gateway binds a loopback address; "
        "false turns keys off anywhere (the gateway warns loudly)",
    )
    keys_file: str | None = Field(
        None, description="the key file (default $SHIPIT_HOME/keys.json, made by `shipit keys`)"
    )
    audit_log: str | None = Field(
        None,
        description="JSON-lines audit log of key use and admin actions (default: audit.jsonl "
        "next to the key file); an empty string turns it off",
    )
    metrics: Literal["open", "admin"] = Field(
        "admin", description="who may read /metrics when keys are required"
    )
    cache_isolation: bool = Field(
        True,
        description="give each tenant its own prefix-cache salt (x-shipit-cache-salt and the "
        "body's cache_salt); a client's own salt is kept only for admin keys",
    )
    priority_range: tuple[int, int] = Field(
        (-1000, 1000), description="the priorities accepted when keys are off"
    )

    @model_validator(mode="after")
    def _range(self) -> Self:
        lo, hi = self.priority_range
        if lo > hi:
            raise ValueError(f"auth.priority_range [{lo}, {hi}] is empty; give [low, high]")
        return self


class EdgeLimitsConfig(_Strict):
    """What one connection or request may cost the gateway before it is refused."""

    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="larger request bodies get 413, read no further"
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line and headers together; then 431"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this; then closed"
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="a request's body must arrive within this; then 408"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections close after")
    max_json_depth: int = Field(32, ge=2, description="deeper JSON bodies get 400")
    max_deadline_ms: int = Field(
        86_400_000, ge=1, description="the largest x-shipit-deadline-ms accepted"
    )


class TlsConfig(_Strict):
    cert: str | None = Field(None, description="PEM certificate (chain) for HTTPS")
    key: str | None = Field(None, description="PEM private key for the certificate")

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError(
                "tls needs both cert and key (PEM files); give both, or neither for plain HTTP"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(auth: AuthConfig, host: str) -> bool:
    """Keys are required unless switched off, or when unset, unless bound to loopback."""
    if auth.required is not None:
        return auth.required
    return not is_loopback(host)
