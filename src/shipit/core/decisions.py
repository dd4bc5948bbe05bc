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

from typing import Protocol


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
        self.entries: list[tuple[str, str, object, object, object]] = []

    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        self.entries.append((policy, deployment, snapshot, state, decision))
