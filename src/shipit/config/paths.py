"""Where shipit keeps its files on this machine: one place, ``$SHIPIT_HOME`` or
``~/.cache/shipit`` (converted models, the key file, the jobs store, locks)."""

from __future__ import annotations

import os
from pathlib import Path


def shipit_home() -> Path:
    """``$SHIPIT_HOME`` (``~`` expanded) or ``~/.cache/shipit``."""
    env = os.environ.get("SHIPIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shipit"
