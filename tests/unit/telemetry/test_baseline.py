"""Baseline-deviation detector on synthetic series: fires on held deviations only, clears with
hysteresis, knows which direction is bad, and uses a seasonal baseline once history allows."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from shipit.telemetry.baseline import (
    DAY_S,
    HOUR_S,
    AlertState,
    BaselineConfig,
    BaselineDecision,
    BaselineDetector,
    DeviationMonitor,
    Direction,
    Mode,
    error_rate_config,
    latency_config,
    robust_baseline,
    throughput_config,
)

STEP_S = 60.0


def _feed(
    detector: BaselineDetector, minutes: int, value: Callable[[float], float], start_s: float = 0.0
) -> list[BaselineDecision]:
    return [
        detector.observe(start_s + i * STEP_S, value(start_s + i * STEP_S)) for i in range(minutes)
    ]


def _noisy(level: float, seed: int = 7, sigma: float = 0.05) -> Callable[[float], float]:
    rng = random.Random(seed)
    return lambda _t: level * math.exp(rng.gauss(0.0, sigma))


def test_robust_baseline_ignores_outliers() -> None:
    base = robust_baseline([1.0, 1.1, 0.9, 1.0, 50.0], mode=Mode.ROLLING)
    assert base.median == 1.0
    assert base.scale == pytest.approx(1.4826 * 0.1)


def test_learning_until_enough_samples() -> None:
    d = BaselineDetector(latency_config(min_samples=30), name="ttft")
    decisions = _feed(d, 40, _noisy(0.4))
    assert decisions[0].baseline is None and "learning" in decisions[0].reason
    # 30 samples older than the 30-minute exclusion are needed.
    assert all(x.state is AlertState.OK for x in decisions)
    assert decisions[-1].baseline is None
    later = _feed(d, 30, _noisy(0.4), start_s=40 * STEP_S)
    assert later[-1].baseline is not None and later[-1].baseline.mode is Mode.ROLLING


def test_step_fires_after_the_hold_and_clears_with_hysteresis() -> None:
    cfg = latency_config(for_s=600, clear_for_s=900)
    d = BaselineDetector(cfg, name="ttft_p99_s")
    _feed(d, 3 * 60, _noisy(0.4))
    step = _feed(d, 60, _noisy(0.8, seed=8), start_s=3 * HOUR_S)
    fired = [x for x in step if x.fired]
    assert len(fired) == 1
    # The smoothed median crosses after ~3 minutes, then the 10-minute hold runs.
    delay_s = fired[0].at_s - 3 * HOUR_S
    assert 600 <= delay_s <= 900
    assert "firing" in fired[0].reason and "above its rolling baseline" in fired[0].reason
    assert all(
        x.state is AlertState.PENDING
        for x in step
        if x.at_s < fired[0].at_s and x.score and x.score >= 4
    )
    back = _feed(d, 60, _noisy(0.4, seed=9), start_s=4 * HOUR_S)
    cleared = [x for x in back if x.cleared]
    assert len(cleared) == 1 and cleared[0].state is AlertState.OK
    assert cleared[0].at_s - 4 * HOUR_S >= 900


def test_short_spike_and_lone_outliers_do_not_fire() -> None:
    d = BaselineDetector(latency_config(), name="ttft")
    _feed(d, 3 * 60, _noisy(0.4))
    # Five minutes at x4: shorter than smoothing plus the 10-minute hold.
    burst = _feed(d, 5, lambda _t: 1.6, start_s=3 * HOUR_S)
    rest = _feed(d, 60, _noisy(0.4, seed=3), start_s=3 * HOUR_S + 5 * STEP_S)
    assert not any(x.fired for x in burst + rest)
    outliers = _feed(d, 120, lambda t: 5.0 if int(t) % 1200 == 0 else 0.4, start_s=5 * HOUR_S)
    assert not any(x.active for x in outliers)


def test_score_between_clear_and_fire_keeps_an_alert_firing() -> None:
    d = BaselineDetector(latency_config(rel_floor=0.1, clear_for_s=0), name="ttft")
    _feed(d, 3 * 60, lambda _t: 1.0 + 0.001 * (_t % 7))
    high = _feed(d, 30, lambda _t: 1.6, start_s=3 * HOUR_S)  # score ~6: fires
    assert any(x.fired for x in high)
    middle = _feed(d, 30, lambda _t: 1.3, start_s=3.5 * HOUR_S)  # score ~3: between 2 and 4
    assert all(x.state is AlertState.FIRING for x in middle[5:])
    low = _feed(d, 10, lambda _t: 1.0, start_s=4 * HOUR_S)
    assert any(x.cleared for x in low)


@pytest.mark.parametrize(
    ("config", "factor", "fires"),
    [
        (latency_config(), 2.0, True),
        (latency_config(), 0.5, False),
        (throughput_config(), 0.5, True),
        (throughput_config(), 2.0, False),
        (BaselineConfig(direction=Direction.BOTH), 0.5, True),
        (BaselineConfig(direction=Direction.BOTH), 2.0, True),
    ],
)
def test_direction_decides_what_is_bad(config: BaselineConfig, factor: float, fires: bool) -> None:
    d = BaselineDetector(config, name="m")
    _feed(d, 3 * 60, _noisy(100.0))
    out = _feed(d, 40, _noisy(100.0 * factor, seed=2), start_s=3 * HOUR_S)
    assert any(x.fired for x in out) is fires


def test_error_rate_near_zero_needs_a_percentage_point_move() -> None:
    d = BaselineDetector(error_rate_config(), name="error_ratio")
    _feed(d, 3 * 60, lambda t: 0.001 if int(t) % 600 == 0 else 0.0)
    small = _feed(d, 40, lambda _t: 0.02, start_s=3 * HOUR_S)  # 2 points: under 4 x 1 point
    assert not any(x.fired for x in small)
    big = _feed(d, 40, lambda _t: 0.08, start_s=3 * HOUR_S + 40 * STEP_S)
    assert any(x.fired for x in big)


def _diurnal(t_s: float, rng: random.Random) -> float:
    return 0.4 * (1 + 0.5 * math.sin(2 * math.pi * t_s / DAY_S)) * math.exp(rng.gauss(0, 0.05))


def test_seasonal_baseline_accepts_the_daily_peak_but_flags_a_misplaced_one() -> None:
    rng = random.Random(11)
    d = BaselineDetector(latency_config(), name="ttft")
    normal = _feed(d, 5 * 1440 + 720, lambda t: _diurnal(t, rng))
    assert normal[-1].baseline is not None and normal[-1].baseline.mode is Mode.HOUR_OF_DAY
    assert not any(x.fired for x in normal[3 * 1440 :])
    # Day 6, second half: the peak arrives at the usual trough (the cycle 12 hours off).
    shifted = _feed(d, 12 * 60, lambda t: _diurnal(t + DAY_S / 2, rng), start_s=5.5 * DAY_S)
    assert any(x.fired for x in shifted)


def test_hour_of_week_baseline_after_three_weeks() -> None:
    cfg = latency_config(seasonal_min_days=1, weekly_min_days=14, history_days=15, min_samples=10)
    d = BaselineDetector(cfg, name="rps")
    decisions = [d.observe(i * 600.0, 1.0) for i in range(int(14.5 * DAY_S / 600))]
    modes = {x.baseline.mode for x in decisions if x.baseline is not None}
    assert modes == {Mode.ROLLING, Mode.HOUR_OF_DAY, Mode.HOUR_OF_WEEK}


def test_time_must_not_go_back_and_bad_configs_name_the_field() -> None:
    d = BaselineDetector()
    d.observe(100.0, 1.0)
    with pytest.raises(ValueError, match="time order"):
        d.observe(99.0, 1.0)
    with pytest.raises(ValueError, match="clear_score"):
        BaselineConfig(fire_score=2.0, clear_score=3.0)
    with pytest.raises(ValueError, match="window_s"):
        BaselineConfig(window_s=0)
    with pytest.raises(ValueError, match="min_samples"):
        BaselineConfig(min_samples=1)


def test_monitor_keeps_one_detector_per_deployment_and_metric() -> None:
    m = DeviationMonitor({"ttft_p99_s": latency_config(), "rps": throughput_config()})
    for i in range(4 * 60):
        t = i * STEP_S
        chat = 0.4 if t < 3 * HOUR_S else 1.2
        m.observe(deployment="chat", metric="ttft_p99_s", now_s=t, value=chat)
        m.observe(deployment="embed", metric="ttft_p99_s", now_s=t, value=0.1)
        m.observe(deployment="chat", metric="rps", now_s=t, value=50.0)
    active = m.active()
    assert set(active) == {("chat", "ttft_p99_s")}
    assert "chat/ttft_p99_s" in active[("chat", "ttft_p99_s")].reason
    with pytest.raises(KeyError, match="configured"):
        m.observe(deployment="chat", metric="unknown", now_s=0.0, value=1.0)


def test_decisions_are_frozen() -> None:
    d = BaselineDetector().observe(0.0, 1.0)
    with pytest.raises(AttributeError):
        d.value = 2.0  # type: ignore[misc]


def test_a_firing_decision_is_published_as_shipit_alert_active() -> None:
    from prometheus_client import CollectorRegistry

    from shipit.telemetry.instruments import build_alert_metrics, publish_deviation

    registry = CollectorRegistry()
    metrics = build_alert_metrics(registry)
    d = BaselineDetector(latency_config(), name="ttft")
    _feed(d, 3 * 60, _noisy(0.4))
    last = _feed(d, 40, _noisy(1.2, seed=5), start_s=3 * HOUR_S)[-1]
    assert last.active and last.score is not None
    publish_deviation(
        metrics, deployment="chat", metric="ttft_p99_s", score=last.score, active=True
    )
    labels = {"deployment": "chat", "metric": "ttft_p99_s", "alert": "baseline_deviation"}
    assert registry.get_sample_value("shipit_alert_active", labels) == 1.0
    score = registry.get_sample_value(
        "shipit_baseline_deviation_score", {"deployment": "chat", "metric": "ttft_p99_s"}
    )
    assert score == pytest.approx(last.score)
