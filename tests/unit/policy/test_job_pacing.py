"""Batch lines paced to their completion windows: with interactive load present, jobs run only
as many lines at once as finishing each batch by ``finish_by`` of its window needs (earliest
window first), below the share; behind a window they take the whole share, past the TTFT
guard's cut if need be. Expected figures are worked by hand in each test."""

from __future__ import annotations

from typing import Any

from shipit.config.gateway import parse_config
from shipit.policy.jobs import Backlog, JobSlotsDecision, JobSlotsSnapshot, JobSlotsState, job_slots

CAPACITY = 16  # max_share 0.5: 8 job slots


def decide(
    *backlog: Backlog,
    line_s: float | None = 0.5,
    interactive: int = 4,
    jobs: int = 0,
    state: JobSlotsState | None = None,
    **cfg: Any,
) -> JobSlotsDecision:
    config = parse_config({"jobs": {"max_share": 0.5, "ttft_tolerance": None, **cfg}}).jobs
    snap = JobSlotsSnapshot(
        100.0, CAPACITY, interactive + jobs, 0, jobs, (), tuple(backlog), line_s
    )
    return job_slots(config, snap, state or JobSlotsState())[0]


def test_a_long_window_needs_few_lines_at_once() -> None:
    # 3,000 lines of 0.5 s, 1 h window just opened, finish_by 0.5: done within 1,800 s needs
    # 1,500 slot-seconds / 1,800 s = 0.83 lines at once: one.
    d = decide(Backlog(3000, 3600.0, 3600.0))
    assert (d.limit, d.reason_code) == (1, "paced")
    assert "3000 lines" in d.reason and "finish_by 0.5" in d.reason


def test_the_earliest_window_and_everything_due_before_the_next_decide() -> None:
    # Lines of 2 s. A: 100 lines, 10 min window 600 s left -> target in 300 s: 200 / 300 = 0.67.
    # B: 1,000 lines, 1 h window all left -> target in 1,800 s; due by then A + B = 1,100 lines:
    # 2,200 / 1,800 = 1.22. The larger, rounded up: 2.
    d = decide(Backlog(1000, 3600.0, 3600.0), Backlog(100, 600.0, 600.0), line_s=2.0)
    assert (d.limit, d.reason_code) == (2, "paced")
    # With A 2,000 lines instead: 4,000 / 300 = 13.3 -> above the share of 8: the share holds.
    d = decide(Backlog(1000, 3600.0, 3600.0), Backlog(2000, 600.0, 600.0), line_s=2.0)
    assert (d.limit, d.reason_code) == (8, "shared")


def test_as_the_window_runs_out_the_pace_rises() -> None:
    # 300 lines of 1 s in a 1 h window with 2,000 s left: target 2,000 - 1,800 = 200 s away:
    # 300 / 200 = 1.5 -> 2.
    assert decide(Backlog(300, 3600.0, 2000.0), line_s=1.0).limit == 2
    # 100 s left to the target: 3 at once.
    assert decide(Backlog(300, 3600.0, 1900.0), line_s=1.0).limit == 3


def test_async_requests_have_no_window_and_run_whole() -> None:
    d = decide(Backlog(3), Backlog(3000, 3600.0, 3600.0))
    assert (d.limit, d.reason_code) == (4, "paced")  # 3 async + 1 for the batch
    assert "3 async requests" in d.reason


def test_a_batch_behind_its_target_takes_the_share() -> None:
    # 1 h window with 1,000 s left: the target (half the window) passed 800 s ago.
    d = decide(Backlog(10, 3600.0, 1000.0))
    assert (d.limit, d.reason_code) == (8, "shared")


def test_a_window_beats_the_ttft_guard_but_not_max_share() -> None:
    guarded = JobSlotsState(
        last_interactive_s=100.0, base_mean_s=0.1, base_dev_s=0.01, measured_s=99.0, scale=0.25
    )
    cfg: dict[str, Any] = {"ttft_tolerance": 0.1, "calibrate_every_s": 60}
    # The guard alone: 0.25 x 8 = 2 slots.
    assert decide(state=guarded, **cfg).reason_code == "guarded"
    assert decide(Backlog(3000, 3600.0, 3600.0), state=guarded, **cfg).limit == 1  # paced
    # 600 lines of 1 s due within 100 s: 6 at once, above the guard's 2: the window wins.
    d = decide(Backlog(600, 3600.0, 1900.0), line_s=1.0, state=guarded, **cfg)
    assert (d.limit, d.reason_code) == (6, "deadline")
    # Behind the target: the whole share, 8.
    d = decide(Backlog(600, 3600.0, 1000.0), line_s=1.0, state=guarded, **cfg)
    assert (d.limit, d.reason_code) == (8, "deadline")


def test_one_line_measures_the_line_time_and_no_pacing_when_idle_or_turned_off() -> None:
    batch = Backlog(3000, 3600.0, 3600.0)
    # Not measured yet: one line at a time measures it (and async requests whole).
    assert decide(batch, line_s=None).limit == 1
    assert decide(batch, Backlog(2), line_s=None).limit == 3
    assert decide(batch, finish_by=None).limit == 8
    idle = decide(batch, interactive=0)  # never any interactive load: idle capacity, whole
    assert (idle.limit, idle.reason_code) == (16, "idle")


def test_a_batch_left_always_gets_one_line_at_once() -> None:
    # Lines measured at no time at all (instant replicas): still one at a time, never none.
    d = decide(Backlog(5, 3600.0, 3600.0), line_s=0.0)
    assert (d.limit, d.reason_code) == (1, "paced")


def test_the_autoscaler_is_told_what_the_windows_need_not_the_backlog() -> None:
    from shipit.policy.jobs import job_demand

    cfg = parse_config({"jobs": {}}).jobs
    batch = Backlog(3000, 3600.0, 3600.0)
    assert job_demand(cfg, (batch,), 0.5) == 1  # as paced above: 0.83 -> 1
    assert job_demand(cfg, (batch, Backlog(2)), 0.5) == 3  # async requests count whole
    assert job_demand(cfg, (batch,), None) == 1  # one line measures the line time
    assert job_demand(cfg, (), 0.5) == 0
    # 600 lines of 1 s due within 100 s: 6.
    assert job_demand(cfg, (Backlog(600, 3600.0, 1900.0),), 1.0) == 6
    off = parse_config({"jobs": {"finish_by": None}}).jobs
    assert job_demand(off, (batch,), 0.5) is None  # no pacing: every line left counts
