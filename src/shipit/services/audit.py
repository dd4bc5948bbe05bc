"""The audit log: one JSON object per line for every key use and admin action.

Owns appending records (``ts``, ``event`` and the fields given: key id, tenant, path, model,
status, tokens) to a file opened in append mode with mode 0600, flushed per line so that a
crash loses nothing already answered. The file opens at the first record and closes at the
gateway's shutdown (a later record reopens it). A record never holds a key or a prompt:
callers pass ids. ``NO_AUDIT`` writes nothing. It must not decide anything.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TextIO


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO | None = None

    def _open(self, path: Path) -> TextIO:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        return self._file

    def record(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        file = self._file or self._open(self.path)
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event}
        line.update(fields)
        file.write(json.dumps(line, separators=(",", ":")) + "\n")
        file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


NO_AUDIT = AuditLog(None)
