"""Trace parsing: JSON lines and CSV, column detection, time units, errors that teach."""

from __future__ import annotations

import pytest

from shipit.sim.traces import Columns, TraceError, parse_trace

MOONCAKE = (
    '{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1]}\n'
    '{"timestamp": 3000, "input_length": 100, "output_length": 5}\n'
    "\n"
    '{"timestamp": 1500, "input_length": 200, "output_length": 0}\n'
)


def test_jsonl_milliseconds_sorted_from_zero() -> None:
    reqs = parse_trace(MOONCAKE)
    assert [q.arrival_s for q in reqs] == [0.0, 1.5, 3.0]
    assert [(q.prompt_tokens, q.output_tokens) for q in reqs] == [(6758, 500), (200, 1), (100, 5)]


def test_a_region_field_names_the_client_region() -> None:
    jsonl = (
        '{"timestamp": 0.5, "input_length": 10, "output_length": 2, "region": "europe"}\n'
        '{"timestamp": 0.0, "input_length": 10, "output_length": 2}\n'
    )
    assert [q.region for q in parse_trace(jsonl)] == [None, "europe"]
    csv = "timestamp,input_tokens,output_tokens,region\n0,10,2, asia \n1,10,2,\n"
    assert [q.region for q in parse_trace(csv)] == ["asia", None]


def test_time_scale_replays_faster() -> None:
    assert [q.arrival_s for q in parse_trace(MOONCAKE, time_scale=3)] == [0.0, 0.5, 1.0]


def test_csv_seconds_by_common_names() -> None:
    text = "timestamp,prompt_tokens,completion_tokens\n10.5,300,20\n10.0,100,10\n12.25,50,5\n"
    reqs = parse_trace(text)
    assert [q.arrival_s for q in reqs] == [0.0, 0.5, 2.25]
    assert reqs[0].prompt_tokens == 100


def test_csv_datetimes_with_seven_fraction_digits() -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.1805900,396,109\n"
    )
    reqs = parse_trace(text)
    assert reqs[1].arrival_s == pytest.approx(3.5)
    assert (reqs[1].prompt_tokens, reqs[1].output_tokens) == (396, 109)


def test_named_columns_and_explicit_unit() -> None:
    text = "t,a,b\n0,5,6\n2,7,8\n"
    cols = Columns.parse("timestamp=t,input=a,output=b")
    assert [q.arrival_s for q in parse_trace(text, columns=cols, time_unit="ms")] == [0.0, 0.002]
    assert [q.arrival_s for q in parse_trace(text, columns=cols)] == [0.0, 2.0]


def test_epoch_milliseconds_are_detected() -> None:
    text = "timestamp,input_length,output_length\n1700000000000,5,6\n1700000000250,7,8\n"
    assert [q.arrival_s for q in parse_trace(text)] == [0.0, 0.25]


def test_missing_column_names_the_columns_and_the_flag() -> None:
    with pytest.raises(TraceError, match=r"no input column among time, x.*--columns input="):
        parse_trace("time,x,output_length\n0,1,2\n")


def test_bad_values_name_the_request() -> None:
    with pytest.raises(TraceError, match=r"request 2: input_length 'many'"):
        parse_trace("timestamp,input_length,output_length\n0,1,2\n1,many,2\n")
    with pytest.raises(TraceError, match=r"line 2 is not JSON"):
        parse_trace('{"timestamp": 0, "input_length": 1, "output_length": 1}\n{oops\n')
    with pytest.raises(TraceError, match=r"ROLE=NAME"):
        Columns.parse("prompt=x")
    with pytest.raises(TraceError, match="no requests"):
        parse_trace("timestamp,input_length,output_length\n")
