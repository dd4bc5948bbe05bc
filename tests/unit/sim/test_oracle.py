"""The oracle: per window the fewest replicas whose capacity serves the window's work."""

from __future__ import annotations

from shipit.engine.sim_timing import ReplicaModel
from shipit.sim.oracle import oracle, request_work_s
from shipit.sim.results import SimRequest


def test_idle_windows_count_one_replica_and_busy_ones_more() -> None:
    timing = ReplicaModel().resolve()
    one = SimRequest(0.0, 4000, 200)
    work = request_work_s(timing, one, batch=16)
    assert 0 < work < 10.0
    # Enough copies in the third window to need at least three replicas' 10 s of work.
    n = int(25.0 / work) + 1
    trace = [one, *[SimRequest(20.0 + i * 0.01, 4000, 200) for i in range(n)]]
    o = oracle(trace, timing, end_s=40.0, max_concurrency=16)
    assert o.replicas[0] == 1 and o.replicas[1] == 1 and o.replicas[3] == 1
    assert o.replicas[2] >= 3
    assert o.replica_seconds == sum(o.replicas) * 10.0 and o.peak == o.replicas[2]


def test_larger_batches_make_decode_cheaper_per_request() -> None:
    timing = ReplicaModel().resolve()
    req = SimRequest(0.0, 512, 1000)
    assert request_work_s(timing, req, batch=16) < request_work_s(timing, req, batch=1) / 4
