"""The jobs' TTFT guard: it measures interactive TTFT without jobs, then scales the job share
down when interactive streams slow past the tolerance, and back up when they do not."""

from __future__ import annotations

from shipit.config.gateway import parse_config
from shipit.policy.jobs import (
    CALIBRATION_MAX_S,
    CALIBRATION_SAMPLES,
    JobSlotsDecision,
    JobSlotsSnapshot,
    JobSlotsState,
    TtftSample,
    job_slots,
)

CFG = parse_config({"jobs": {"max_share": 0.5, "ttft_tolerance": 0.1}}).jobs
CAPACITY = 16  # max_share 0.5: 8 job slots


class Driver:
    def __init__(self) -> None:
        self.state = JobSlotsState()

    def step(
        self, now: float, *samples: TtftSample, jobs: int = 0, interactive: int = 2
    ) -> JobSlotsDecision:
        snap = JobSlotsSnapshot(now, CAPACITY, interactive + jobs, 0, jobs, samples)
        d, self.state = job_slots(CFG, snap, self.state)
        return d


def clean(ms: float) -> TtftSample:
    return TtftSample(ms / 1e3, clean=True)


def loaded(ms: float) -> TtftSample:
    return TtftSample(ms / 1e3, clean=False)


def calibrated(driver: Driver) -> None:
    """Clean samples of 80 and 120 ms: a level of about 100 ms, a deviation of about 20."""
    first = driver.step(0.0)
    assert (first.limit, first.reason_code) == (0, "calibrating")  # no level known yet
    d = driver.step(0.5, *[clean(80), clean(120)] * (CALIBRATION_SAMPLES // 2))
    assert (d.limit, d.reason_code) == (8, "shared")


def test_the_level_is_measured_before_jobs_share_with_interactive_load() -> None:
    driver = Driver()
    calibrated(driver)
    assert driver.state.base_mean_s is not None
    assert abs(driver.state.base_mean_s - 0.1) < 0.01
    assert 0.01 < driver.state.base_dev_s < 0.03


def test_slow_interactive_streams_beside_jobs_halve_the_share_once_per_cooldown() -> None:
    driver = Driver()
    calibrated(driver)
    d = driver.step(1.0, loaded(400), loaded(400), jobs=8)
    assert (d.limit, d.reason_code) == (4, "guarded")  # two slow samples, one cut
    assert "0.50 of max_share" in d.reason
    d = driver.step(2.5, loaded(400), jobs=4)
    assert (d.limit, d.reason_code) == (2, "guarded")
    d = driver.step(4.0, loaded(400), jobs=2)
    assert d.limit == 1


def test_interactive_streams_within_tolerance_give_the_share_back_step_by_step() -> None:
    driver = Driver()
    calibrated(driver)
    driver.step(1.0, loaded(400), jobs=8)
    assert driver.state.scale == 0.5
    d = driver.step(2.0, *[loaded(105)] * 10, jobs=4)
    assert d.reason_code == "guarded" and abs(driver.state.scale - 0.7) < 1e-9
    d = driver.step(3.0, *[loaded(105)] * 20, jobs=5)
    assert (d.limit, d.reason_code, driver.state.scale) == (8, "shared", 1.0)


def test_a_sample_between_the_mean_and_the_tail_neither_cuts_nor_raises() -> None:
    driver = Driver()
    calibrated(driver)
    driver.step(1.0, loaded(400), jobs=8)
    driver.step(2.0, loaded(130), loaded(130), jobs=4)  # 1.3x the mean, below the tail bound
    assert driver.state.scale == 0.5


def test_calibration_ends_after_jobs_were_quiet_long_enough_without_samples() -> None:
    driver = Driver()
    assert driver.step(0.0, jobs=3).reason_code == "calibrating"
    assert driver.step(20.0, jobs=3).reason_code == "calibrating"  # running jobs stop the clock
    assert driver.step(21.0).reason_code == "calibrating"
    d = driver.step(21.0 + CALIBRATION_MAX_S)
    assert (d.limit, d.reason_code) == (8, "shared")
    assert driver.state.base_mean_s is None  # nothing measured: no cut can happen
    assert driver.step(32.0, loaded(5000), jobs=8).limit == 8


def test_the_level_is_measured_again_every_calibrate_every_s() -> None:
    driver = Driver()
    calibrated(driver)
    assert driver.step(60.0, jobs=8).reason_code == "shared"
    assert driver.step(61.0, jobs=8).reason_code == "calibrating"


def test_idle_fleets_are_not_guarded() -> None:
    driver = Driver()
    d = driver.step(0.0, jobs=16, interactive=0)
    assert (d.limit, d.reason_code) == (16, "idle")
