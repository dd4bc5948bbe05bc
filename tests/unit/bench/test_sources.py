"""Trace CSV replay and ShareGPT files: parsing, scaling, and errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipit.bench.sources import sharegpt_sessions, trace_arrivals
from shipit.core.errors import InvalidRequestError


def test_trace_replay_keeps_lengths_groups_adapters_and_scales_time(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(
        "timestamp,input_tokens,output_tokens,prefix_group,adapter\n"
        "100.0,40,5,g1,\n101.0,30,6,g1,sql\n104.0,20,7,,\n"
    )
    arrivals = trace_arrivals(str(csv), model="base", speed=2.0, seed=0, prefix_tokens=16)
    assert [a.offset_s for a in arrivals] == [0.0, 0.5, 2.0]
    turns = [a.session.turns[0] for a in arrivals]
    assert [len(t.prompt.split()) for t in turns] == [40, 30, 20]
    assert [t.max_tokens for t in turns] == [5, 6, 7]
    assert [a.session.model for a in arrivals] == ["base", "sql", "base"]
    assert turns[0].prompt.split()[:16] == turns[1].prompt.split()[:16]
    assert arrivals[2].session.prefix_group is None


def test_trace_errors_name_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "m.csv"
    missing.write_text("timestamp,input_tokens\n1,2\n")
    with pytest.raises(InvalidRequestError, match="output_tokens"):
        trace_arrivals(str(missing), model="m", speed=1, seed=0)
    bad = tmp_path / "b.csv"
    bad.write_text("timestamp,input_tokens,output_tokens\n1,2,3\nx,2,3\n")
    with pytest.raises(InvalidRequestError, match="line 3"):
        trace_arrivals(str(bad), model="m", speed=1, seed=0)
    with pytest.raises(InvalidRequestError, match="cannot read"):
        trace_arrivals(str(tmp_path / "absent.csv"), model="m", speed=1, seed=0)


def test_sharegpt_turns_and_lengths(tmp_path: Path) -> None:
    data = [
        {
            "conversations": [
                {"from": "human", "value": "hello " * 10},
                {"from": "gpt", "value": "x" * 400},
                {"from": "human", "value": "more"},
                {"from": "gpt", "value": "y" * 40},
            ]
        },
        {"conversations": [{"from": "gpt", "value": "starts wrong"}]},
        {"id": "no conversations"},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(data))
    sessions = sharegpt_sessions(str(path), model="m", count=2, turns=2, seed=0)
    assert len(sessions) == 1 and len(sessions[0].turns) == 2
    assert sessions[0].turns[0].max_tokens == 100  # ~4 characters per token
    single = sharegpt_sessions(str(path), model="m", count=5, turns=1, seed=0)
    assert [len(s.turns) for s in single] == [1]
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(InvalidRequestError, match="JSON list"):
        sharegpt_sessions(str(path), model="m", count=1, turns=1, seed=0)
