"""The decision log seam: every live driver hands each policy decision it applies to one.

A driver (router, monitor, autoscaler...) reads the clock once, builds a snapshot, calls a
pure ``decide(config, snapshot, state) -> (decision, state)`` and, before applying the
decision, calls ``log.record(policy, deployment, snapshot, state, decision)`` with the state
it passed in. Snapshots, states and decisions are frozen dataclasses made of numbers, strings,
enums, tuples, frozensets and other such records, so a log can be written to a file and read
back (``sim.replay``): the simulator's drivers, fed the same snapshots, must reach the same
decisions. ``NO_LOG`` records nothing and is the default.

This module imports only the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from shipit.core.codec import decode, encode


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One decision as a driver took it."""

    policy: str
    deployment: str
    snapshot: object
    state: object
    decision: object


def entry_line(entry: LogEntry) -> str:
    """One JSON line (no newline) for ``entry``; refuses records that cannot be replayed."""
    return json.dumps(
        {
            "policy": entry.policy,
            "deployment": entry.deployment,
            "snapshot": encode(entry.snapshot, "snapshot"),
            "state": encode(entry.state, "state"),
            "decision": encode(entry.decision, "decision"),
        },
        separators=(",", ":"),
    )


def read_entries(lines: Iterable[str]) -> Iterator[LogEntry]:
    """The entries of a JSON-lines decision log (blank lines skipped)."""
    for line in lines:
        if line.strip():
            raw = json.loads(line)
            yield LogEntry(
                raw["policy"],
                raw["deployment"],
                decode(raw["snapshot"]),
                decode(raw["state"]),
                decode(raw["decision"]),
            )


class DecisionLog(Protocol):
    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        """Keep one decision, with the snapshot and the state it was taken from."""
        ...


class _NoLog:
    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        return None


NO_LOG: DecisionLog = _NoLog()


class MemoryLog:
    """Keeps every decision in a list (tests; the simulator's own record of a run)."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        self.entries.append(LogEntry(policy, deployment, snapshot, state, decision))
