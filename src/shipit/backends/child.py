"""Child processes that do not outlive the process that started them.

``die_with_parent(sig)`` is a ``preexec_fn`` for ``subprocess.Popen``: in the child, before it
execs, it asks Linux (``prctl(PR_SET_PDEATHSIG)``) to send ``sig`` to the child when the thread
that forked it ends, so a parent killed with SIGKILL (which runs no cleanup of its own) still
stops its children: SIGTERM lets a replica or a gateway drain, SIGKILL ends one at once.
Elsewhere than Linux, or without libc, it does nothing. Fork from the thread that lives as long
as the children should (the main thread, or the event loop's).
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

__all__ = ["die_with_parent"]


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up in the parent: a child between fork and exec must not
    ``dlopen`` (another thread of the parent may have held the loader's lock at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    prctl = _prctl()

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig)

    return preexec
