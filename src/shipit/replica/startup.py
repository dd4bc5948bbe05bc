"""A replica's cold start, timed in phases, as ``GET /shipit/startup`` reports it.

Owns ``StartupTimes``: wall-clock marks (the control plane runs in another process, possibly on
another machine, so marks are Unix times and the phases are differences between them) for
process created (read from ``/proc`` on Linux), shipit's command running (the interpreter has
started and parsed the command line), the app starting to load (the server stack imported and
listening), weights loaded (mapped from the prepared cache, a one-time GGUF conversion, or
nothing for a simulated accelerator) and ready (engine built: KV cache allocated, adapters
loaded, engine thread answering). The phases, in order: ``process_start``, ``imports`` (only
when the command marked its start), ``load_weights``, ``warmup``; they add up to process
created -> ready. It must not load anything itself.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipit.config.paths import shipit_home
from shipit.engine.loader import DEFAULT_MODEL


def process_started_unix_s(now_unix_s: float | None = None) -> float | None:
    """When this process was created (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        # Field 22 (starttime, clock ticks since boot); the command name may hold spaces.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        age_s = uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    now = time.time() if now_unix_s is None else now_unix_s
    return now - max(age_s, 0.0)


def weights_source(model: str, simulate: str | None) -> str:
    """Where the weights will come from: ``simulated``, ``cache``, ``conversion`` or ``files``."""
    if simulate:
        return "simulated"
    if model.strip().lower() == DEFAULT_MODEL:
        cached = (shipit_home() / "models" / DEFAULT_MODEL / "config.json").is_file()
        return "cache" if cached else "conversion"
    return "files"


@dataclass(slots=True)
class StartupTimes:
    process_started_unix_s: float | None = field(default_factory=process_started_unix_s)
    command_started_unix_s: float | None = None  # set by ``shipit replica`` before its imports
    loading_unix_s: float | None = None
    weights_loaded_unix_s: float | None = None
    ready_unix_s: float | None = None
    weights_source: str = "files"

    def loading(self) -> None:
        self.loading_unix_s = time.time()

    def weights_loaded(self, source: str) -> None:
        """Called by the engine builder (in its worker thread) once the weights are in."""
        self.weights_source = source
        self.weights_loaded_unix_s = time.time()

    def ready(self) -> None:
        if self.weights_loaded_unix_s is None:
            self.weights_loaded_unix_s = time.time()  # a builder that does not report
        self.ready_unix_s = time.time()

    def phases_s(self) -> dict[str, float]:
        """The phases finished so far, in seconds."""
        out: dict[str, float] = {}
        entered = self.command_started_unix_s
        marks = (
            ("process_start", self.process_started_unix_s, entered or self.loading_unix_s),
            ("imports", entered, self.loading_unix_s),
            ("load_weights", self.loading_unix_s, self.weights_loaded_unix_s),
            ("warmup", self.weights_loaded_unix_s, self.ready_unix_s),
        )
        for name, start, end in marks:
            if start is not None and end is not None:
                out[name] = round(max(end - start, 0.0), 4)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready_unix_s is not None,
            "phases_s": self.phases_s(),
            "weights_source": self.weights_source,
            "process_started_unix_s": self.process_started_unix_s,
            "loading_unix_s": self.loading_unix_s,
            "ready_unix_s": self.ready_unix_s,
        }
