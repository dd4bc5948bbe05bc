"""The self-check's instant server and one measuring step, end to end (behaviour, not speed)."""

from __future__ import annotations

import asyncio

from shipit.bench.selfcheck import _step, instant_server


def test_one_rate_step_and_one_stream_step_complete_every_request() -> None:
    with instant_server(tokens=16, itl_s=0.0, cpu=None) as (url, pid):
        step = asyncio.run(_step("rate", 20.0, url, pid, 1.0))
    assert (step.kind, step.requests, step.errors) == ("rate", 20, 0)
    assert step.send_lag_p99_ms is not None and step.generator_cpu >= 0
    with instant_server(tokens=32, itl_s=0.001, cpu=None) as (url, pid):
        streams = asyncio.run(_step("streams", 4.0, url, pid, 1.0, baseline_ms=None))
    assert (streams.requests, streams.errors) == (8, 0)
