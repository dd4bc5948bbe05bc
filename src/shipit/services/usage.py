"""Tokens each tenant has used, kept across gateway restarts so token budgets hold.

Owns ``usage.json`` next to the key file: ``{"tenants": {name: spent_tokens}}``, read once at
start, written atomically (0600) at most every ``flush_every_s`` while it changes and at
shutdown. A crash loses at most the last interval's counts. It must not decide anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


class UsageStore:
    def __init__(self, path: Path, *, flush_every_s: float = 5.0) -> None:
        self.path = path
        self.flush_every_s = flush_every_s
        self._spent: dict[str, int] = {}
        self._dirty = False
        self._flushed_s: float | None = None

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            tenants = data["tenants"]
            self._spent = {str(k): int(v) for k, v in tenants.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._spent = {}
        return dict(self._spent)

    def note(self, tenant: str, spent_tokens: int, now_s: float) -> None:
        if self._spent.get(tenant) == spent_tokens:
            return
        self._spent[tenant] = spent_tokens
        self._dirty = True
        if self._flushed_s is None or now_s - self._flushed_s >= self.flush_every_s:
            self.flush(now_s)

    def flush(self, now_s: float | None = None) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".usage-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"tenants": self._spent}, f)
            Path(tmp).replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
        self._dirty = False
        if now_s is not None:
            self._flushed_s = now_s
