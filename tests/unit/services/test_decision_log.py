"""The JSON-lines decision log writes what ``read_entries`` reads back, equal record for record."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.core.codec import CodecError
from shipit.core.decisions import LogEntry, read_entries
from shipit.core.fleet import FleetState, ReplicaRecord, ReplicaState
from shipit.services.decision_log import JsonlDecisionLog


def test_entries_round_trip_through_the_file(tmp_path: Path) -> None:
    fleet = FleetState((ReplicaRecord("r1", "http://a", state=ReplicaState.STARTING),))
    log = JsonlDecisionLog(tmp_path / "d" / "log.jsonl", flush_every=1)
    log.record("health", "default", fleet, (("r1", 2),), ("r1", ReplicaState.READY))
    log.record("autoscaling", "default", fleet, None, 3)
    # Flushed per line: readable before close (a crash keeps what was flushed).
    assert len((tmp_path / "d" / "log.jsonl").read_text().splitlines()) == 2
    log.close()
    log.record("late", "default", None, None, None)  # after close: dropped, not an error
    lines = (tmp_path / "d" / "log.jsonl").read_text().splitlines()
    assert list(read_entries(lines)) == [
        LogEntry("health", "default", fleet, (("r1", 2),), ("r1", ReplicaState.READY)),
        LogEntry("autoscaling", "default", fleet, None, 3),
    ]


def test_a_record_that_cannot_be_replayed_is_refused_when_written(tmp_path: Path) -> None:
    log = JsonlDecisionLog(tmp_path / "log.jsonl")
    with pytest.raises(CodecError, match=r"^state"):
        log.record("route", "default", None, {"r1": 1}, None)
    log.close()
