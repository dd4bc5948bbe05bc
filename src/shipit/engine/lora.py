"""The set of LoRA adapters an engine holds loaded: an LRU registry with a cap.

Owns which adapters stay loaded: loading by name (idempotent for the same path), evicting
the least recently used adapter to make room, and pinning adapters that running requests
hold so they are never evicted or unloaded. Reading and validating an adapter directory is
``engine.lora_files``; this module must not parse files or apply adapters to activations.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from shipit.core.errors import CapacityError, InvalidRequestError, UnknownAdapterError
from shipit.engine.lora_files import LoraAdapter, load_lora_adapter
from shipit.engine.model_config import ModelConfig


class LoraRegistry:
    """Loaded adapters with a cap; least-recently-used unpinned adapter is evicted to make room.

    An adapter is pinned while running requests hold it (``acquire`` .. ``release``); pinned
    adapters are never evicted or unloaded. Safe to call from several threads; disk reads
    happen outside the lock.
    """

    def __init__(self, config: ModelConfig, *, max_loras: int) -> None:
        if not isinstance(max_loras, int) or isinstance(max_loras, bool) or max_loras < 1:
            raise InvalidRequestError(
                f"max_loras must be an integer >= 1; got {max_loras!r}", field="max_loras"
            )
        self.config = config
        self.max_loras = max_loras
        self.evictions = 0
        self._adapters: OrderedDict[str, LoraAdapter] = OrderedDict()  # oldest use first
        self._pins: dict[str, int] = {}
        self._lock = threading.RLock()

    def load(self, name: str, path: str | Path) -> LoraAdapter:
        """Load ``name`` from ``path`` (idempotent for the same path), evicting the LRU
        unpinned adapter if the registry is full."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequestError(
                f"lora_name must be a non-empty string; got {name!r}", field="lora_name"
            )
        try:
            resolved = str(Path(path).resolve())
        except (ValueError, OSError) as exc:  # e.g. a NUL byte in the path
            raise InvalidRequestError(
                f"lora_path {str(path)!r} is not a usable path: {exc}", field="lora_path"
            ) from exc
        with self._lock:
            if self._reuse(name, resolved) is None:
                self._check_room(name)
        adapter = load_lora_adapter(name, path, self.config)
        with self._lock:
            # Another thread may have loaded the same name while we read the files.
            existing = self._reuse(name, resolved)
            if existing is not None:
                return existing
            if len(self._adapters) >= self.max_loras:
                self._evict_one(name)
            self._adapters[name] = adapter
            return adapter

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise UnknownAdapterError(
                    f"cannot unload LoRA adapter {name!r}: it is not loaded; "
                    f"{self._loaded_phrase()}",
                    field="lora_name",
                )
            pins = self._pins.get(name, 0)
            if pins:
                raise InvalidRequestError(
                    f"cannot unload LoRA adapter {name!r}: {pins} running request(s) use it; "
                    "unload it after they finish",
                    field="lora_name",
                )
            del self._adapters[name]

    def get(self, name: str) -> LoraAdapter:
        with self._lock:
            adapter = self._adapters.get(name)
            if adapter is None:
                raise UnknownAdapterError(
                    f"model {name!r} is neither the base model nor a loaded LoRA adapter; "
                    f"{self._loaded_phrase()}",
                    field="model",
                )
            self._adapters.move_to_end(name)
            return adapter

    def acquire(self, name: str) -> LoraAdapter:
        with self._lock:
            adapter = self.get(name)
            self._pins[name] = self._pins.get(name, 0) + 1
            return adapter

    def release(self, name: str) -> None:
        with self._lock:
            pins = self._pins.get(name, 0)
            if pins == 0:
                raise ValueError(f"LoRA adapter {name!r} is not acquired; release without acquire")
            if pins == 1:
                del self._pins[name]
            else:
                self._pins[name] = pins - 1

    def names(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        with self._lock:
            return list(self._adapters)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._adapters

    # ----- internals (lock held) ----------------------------------------------------------

    def _reuse(self, name: str, resolved: str) -> LoraAdapter | None:
        existing = self._adapters.get(name)
        if existing is None:
            return None
        if existing.path != resolved:
            raise InvalidRequestError(
                f"LoRA adapter {name!r} is already loaded from {existing.path}; unload it "
                f"before loading {resolved} under that name, or pick another lora_name",
                field="lora_name",
            )
        self._adapters.move_to_end(name)
        return existing

    def _victim(self) -> str | None:
        return next((n for n in self._adapters if not self._pins.get(n)), None)

    def _check_room(self, name: str) -> None:
        if len(self._adapters) >= self.max_loras and self._victim() is None:
            raise CapacityError(
                f"cannot load LoRA adapter {name!r}: all {self.max_loras} adapter slots "
                f"(max_loras) hold adapters in use by running requests "
                f"({', '.join(self._adapters)}); retry when one finishes or raise max_loras",
                field="lora_name",
            )

    def _evict_one(self, name: str) -> None:
        self._check_room(name)
        victim = self._victim()
        if victim is not None:
            del self._adapters[victim]
            self.evictions += 1

    def _loaded_phrase(self) -> str:
        if not self._adapters:
            return "no LoRA adapters are loaded"
        return "loaded LoRA adapters: " + ", ".join(sorted(self._adapters))
