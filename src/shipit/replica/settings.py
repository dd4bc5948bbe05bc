"""How one replica server is configured: a frozen record built once by the CLI (or a test).

Owns the replica's knobs and their validation (every error names the flag). It must not load
models, open sockets or read the environment: ``replica.runtime`` and ``replica.server`` act
on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipit.core.errors import InvalidRequestError
from shipit.core.replica_admin import ADMIN_TOKEN_ENV

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 4 * MIB
DEFAULT_MAX_MESSAGES = 2048
DEFAULT_MAX_PROMPT_CHARS = 2_000_000
LOOPBACK_HOSTS = frozenset(("127.0.0.1", "::1", "localhost"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) only accepts connections from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """An adapter to load at start-up: served under ``name``, read from ``path``."""

    name: str
    path: str

    @classmethod
    def parse(cls, spec: str) -> LoraSpec:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InvalidRequestError(f"--lora expects NAME=PATH, got {spec!r}", field="lora")
        return cls(name.strip(), path.strip())


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    model: str
    # The name clients send as ``model``; defaults to ``model`` as given.
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    kv_cache_bytes: int = 512 * MIB
    max_model_len: int | None = None
    max_waiting: int = 1024
    max_loras: int = 4
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)
    # ``GPU:MODEL[:tpN]``: the real scheduler over a simulated accelerator.
    simulate: str | None = None
    drain_timeout_s: float = 30.0
    retry_after_s: int = 5
    kv_event_buffer: int = 100_000
    # How often queued KV events are moved from the engine into the feed's buffer.
    kv_event_poll_s: float = 0.5
    # Security: the bearer token admin routes require (never printed: repr=False), whether
    # they may be used without one (loopback only), runtime LoRA loading and where from.
    admin_token: str | None = field(default=None, repr=False)
    allow_unauthenticated_admin: bool = False
    enable_lora_loading: bool = False
    lora_roots: tuple[str, ...] = ()
    # Input limits: bytes of one request body, messages of one chat, characters of a prompt.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidRequestError(f"--port must be in 0..65535, got {self.port}", field="port")
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_waiting", "max_loras"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise InvalidRequestError(
                    f"{flag} must be >= 1, got {getattr(self, name)}", field=name
                )
        if self.drain_timeout_s < 0:
            raise InvalidRequestError(
                f"--drain-timeout-s must be >= 0, got {self.drain_timeout_s}",
                field="drain_timeout_s",
            )
        for name in ("max_body_bytes", "max_messages", "max_prompt_chars"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise InvalidRequestError(
                    f"{flag} must be >= 1, got {getattr(self, name)}", field=name
                )
        self._check_security()
        if self.kv_event_buffer < 1:
            raise InvalidRequestError(
                f"kv_event_buffer must be >= 1, got {self.kv_event_buffer}",
                field="kv_event_buffer",
            )

    @property
    def model_name(self) -> str:
        """The base model's name in the API and in metric labels."""
        return self.served_model_name or self.model

    def _check_security(self) -> None:
        if self.admin_token is not None and len(self.admin_token.strip()) < 16:
            raise InvalidRequestError(
                f"the admin token ({ADMIN_TOKEN_ENV} or --admin-token-file) must be at least 16 "
                "characters; generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'",
                field="admin_token",
            )
        if self.allow_unauthenticated_admin and not is_loopback(self.host):
            raise InvalidRequestError(
                f"--allow-unauthenticated-admin is only allowed on a loopback address "
                f"(127.0.0.1, ::1), not --host {self.host}; set {ADMIN_TOKEN_ENV} or "
                "--admin-token-file instead",
                field="allow_unauthenticated_admin",
            )
        if self.lora_roots and not self.enable_lora_loading:
            raise InvalidRequestError(
                "--lora-root only matters with --enable-lora-loading; add it or drop --lora-root",
                field="lora_roots",
            )
        if self.enable_lora_loading and not self.lora_roots:
            raise InvalidRequestError(
                "--enable-lora-loading needs at least one --lora-root DIR: adapters are only "
                "loaded from under those directories",
                field="lora_roots",
            )
