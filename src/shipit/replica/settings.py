"""How one replica server is configured: a frozen record built once by the CLI (or a test).

Owns the replica's knobs and their validation (every error names the flag). It must not load
models, open sockets or read the environment: ``replica.runtime`` and ``replica.server`` act
on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipit.core.errors import InvalidRequestError

MIB = 1024 * 1024


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
        if self.kv_event_buffer < 1:
            raise InvalidRequestError(
                f"kv_event_buffer must be >= 1, got {self.kv_event_buffer}",
                field="kv_event_buffer",
            )

    @property
    def model_name(self) -> str:
        """The base model's name in the API and in metric labels."""
        return self.served_model_name or self.model
