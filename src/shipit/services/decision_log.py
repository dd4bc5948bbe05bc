"""A ``DecisionLog`` that appends each decision to a JSON-lines file (``--record-decisions``).

Owns the file: one line per decision, written as it is taken (the line is built by
``core.decisions.entry_line``, which refuses a record that could not be replayed), flushed
every ``flush_every`` lines and on ``close`` so a crash loses at most that many. The lines are
read back by ``core.decisions.read_entries`` and replayed by ``sim.replay``. It must not decide
anything and must not be on the request path when no file was asked for (``NO_LOG`` then).
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from shipit.core.decisions import LogEntry, entry_line


class JsonlDecisionLog:
    def __init__(self, path: str | Path, *, flush_every: int = 64) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self.path.open("w", encoding="utf-8")
        self._flush_every = max(flush_every, 1)
        self._pending = 0
        self.count = 0

    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        if self._file is None:
            return
        self._file.write(entry_line(LogEntry(policy, deployment, snapshot, state, decision)))
        self._file.write("\n")
        self.count += 1
        self._pending += 1
        if self._pending >= self._flush_every:
            self._file.flush()
            self._pending = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
