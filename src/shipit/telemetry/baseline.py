"""Baseline-deviation alerts: learn what normal is per (deployment, metric), flag departures.

Owns a robust detector: the baseline is the median of past samples and its spread the MAD
(scaled to a standard deviation), taken over a rolling window, or over the same hour of previous
days (then the same hour of the week) once enough history exists, so a daily peak is not an
anomaly. The score is how many spreads the recent median sits from the baseline, signed so that
positive is worse (latency up, throughput down). An alert fires only after the score stays above
``fire_score`` for ``for_s`` and clears only after it stays below the lower ``clear_score`` for
``clear_for_s`` (hysteresis). Pure: time is passed in as ``now_s`` (Unix seconds; hour-of-day is
UTC plus ``utc_offset_s``); no clock, IO or metrics library here. Decisions are frozen
dataclasses with a reason a person can read.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

DAY_S = 86_400.0
HOUR_S = 3_600.0
WEEK_S = 7 * DAY_S
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


class Direction(StrEnum):
    UP_IS_BAD = "up_is_bad"  # latency, error rate, queue depth
    DOWN_IS_BAD = "down_is_bad"  # throughput, goodput, cache hit rate
    BOTH = "both"


class Mode(StrEnum):
    LEARNING = "learning"
    ROLLING = "rolling"
    HOUR_OF_DAY = "hour_of_day"
    HOUR_OF_WEEK = "hour_of_week"


class AlertState(StrEnum):
    OK = "ok"
    PENDING = "pending"  # deviating, not yet for long enough
    FIRING = "firing"
    RESOLVING = "resolving"  # back within clear_score, not yet for long enough


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    direction: Direction = Direction.UP_IS_BAD
    window_s: float = 6 * HOUR_S
    exclude_recent_s: float = 30 * 60.0
    smoothing_s: float = 5 * 60.0
    min_samples: int = 30
    fire_score: float = 4.0
    clear_score: float = 2.0
    for_s: float = 10 * 60.0
    clear_for_s: float = 15 * 60.0
    rel_floor: float = 0.05
    abs_floor: float = 0.0
    seasonal_min_days: float = 3.0
    weekly_min_days: float = 21.0
    history_days: float = 28.0
    utc_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clear_score < self.fire_score:
            raise ValueError(
                f"clear_score ({self.clear_score}) must be at least 0 and below fire_score "
                f"({self.fire_score}); the gap is the hysteresis"
            )
        for name in ("window_s", "smoothing_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("exclude_recent_s", "for_s", "clear_for_s", "rel_floor", "abs_floor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or more, got {getattr(self, name)}")
        if self.min_samples < 3:
            raise ValueError(f"min_samples must be at least 3, got {self.min_samples}")
        if not self.seasonal_min_days <= self.weekly_min_days <= self.history_days:
            raise ValueError("need seasonal_min_days <= weekly_min_days <= history_days")


def latency_config(**overrides: float) -> BaselineConfig:
    """Latency percentiles: up is bad; a 5 % change is never news on its own."""
    return BaselineConfig(direction=Direction.UP_IS_BAD, **overrides)  # type: ignore[arg-type]


def error_rate_config(**overrides: float) -> BaselineConfig:
    """Error ratio: usually ~0, so the spread floor is absolute (1 percentage point)."""
    values: dict[str, float] = {"abs_floor": 0.01, "rel_floor": 0.0} | overrides
    return BaselineConfig(direction=Direction.UP_IS_BAD, **values)  # type: ignore[arg-type]


def throughput_config(**overrides: float) -> BaselineConfig:
    """Requests or tokens per second: a drop is bad, a surge is the autoscaler's business."""
    return BaselineConfig(direction=Direction.DOWN_IS_BAD, **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Baseline:
    mode: Mode
    median: float
    scale: float
    samples: int


@dataclass(frozen=True, slots=True)
class BaselineDecision:
    """What the detector concluded at ``at_s``; ``fired``/``cleared`` mark transitions."""

    at_s: float
    value: float
    baseline: Baseline | None
    score: float | None
    state: AlertState
    fired: bool
    cleared: bool
    reason: str

    @property
    def active(self) -> bool:
        """True while an alert is raised (firing, or firing and not yet resolved)."""
        return self.state in (AlertState.FIRING, AlertState.RESOLVING)


def robust_baseline(values: Iterable[float], *, mode: Mode) -> Baseline:
    """Median and MAD (as a standard deviation) of ``values``."""
    data = list(values)
    median = statistics.median(data)
    mad = statistics.median(abs(v - median) for v in data)
    return Baseline(mode=mode, median=median, scale=MAD_TO_SIGMA * mad, samples=len(data))


@dataclass(slots=True)
class _Alert:
    state: AlertState = AlertState.OK
    since_s: float = 0.0


@dataclass(slots=True)
class _Seasonal:
    """Samples kept by hour-of-day and hour-of-week, and baselines cached per hour."""

    by_day_hour: dict[int, deque[tuple[float, float]]] = field(default_factory=dict)
    by_week_hour: dict[int, deque[tuple[float, float]]] = field(default_factory=dict)
    cache: dict[tuple[Mode, int], Baseline | None] = field(default_factory=dict)


class BaselineDetector:
    """One series: feed ``observe(now_s, value)`` in time order; get a ``BaselineDecision``."""

    def __init__(self, config: BaselineConfig | None = None, *, name: str = "value") -> None:
        self.config = config or BaselineConfig()
        self.name = name
        self._recent: deque[tuple[float, float]] = deque()
        self._seasonal = _Seasonal()
        self._first_s: float | None = None
        self._last_s: float | None = None
        self._alert = _Alert()

    def observe(self, now_s: float, value: float) -> BaselineDecision:
        if self._last_s is not None and now_s < self._last_s:
            raise ValueError(f"samples must come in time order: {now_s} after {self._last_s}")
        self._first_s = now_s if self._first_s is None else self._first_s
        self._last_s = now_s
        self._remember(now_s, value)
        smoothed = statistics.median(self._latest_values(now_s - self.config.smoothing_s))
        base = self._baseline(now_s)
        if base is None:
            self._alert = _Alert()
            reason = f"{self.name}: learning ({len(self._recent)} samples so far)"
            return BaselineDecision(
                now_s, smoothed, None, None, AlertState.OK, False, False, reason
            )
        score = self._score(smoothed, base)
        return self._step(now_s, smoothed, base, score)

    def _latest_values(self, after_s: float) -> list[float]:
        out = []
        for t, v in reversed(self._recent):
            if t <= after_s:
                break
            out.append(v)
        return out

    def _remember(self, now_s: float, value: float) -> None:
        c = self.config
        self._recent.append((now_s, value))
        horizon = now_s - c.window_s - c.exclude_recent_s - c.smoothing_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        local_s = now_s + c.utc_offset_s
        oldest = now_s - c.history_days * DAY_S
        for table, key in (
            (self._seasonal.by_day_hour, int(local_s // HOUR_S) % 24),
            # 1970-01-01 was a Thursday; +3 days makes Monday 00:00 hour 0 of the week.
            (self._seasonal.by_week_hour, int((local_s + 3 * DAY_S) // HOUR_S) % 168),
        ):
            bucket = table.setdefault(key, deque())
            bucket.append((now_s, value))
            while bucket and bucket[0][0] < oldest:
                bucket.popleft()

    def _baseline(self, now_s: float) -> Baseline | None:
        c = self.config
        assert self._first_s is not None
        history_s = now_s - self._first_s
        local_s = now_s + c.utc_offset_s
        if history_s >= c.weekly_min_days * DAY_S:
            key = int((local_s + 3 * DAY_S) // HOUR_S) % 168
            base = self._seasonal_baseline(Mode.HOUR_OF_WEEK, key, now_s, WEEK_S / 2)
            if base is not None:
                return base
        if history_s >= c.seasonal_min_days * DAY_S:
            key = int(local_s // HOUR_S) % 24
            base = self._seasonal_baseline(Mode.HOUR_OF_DAY, key, now_s, DAY_S / 2)
            if base is not None:
                return base
        end = now_s - c.exclude_recent_s
        past = [v for t, v in self._recent if end - c.window_s <= t < end]
        if len(past) < c.min_samples:
            return None
        return robust_baseline(past, mode=Mode.ROLLING)

    def _seasonal_baseline(
        self, mode: Mode, key: int, now_s: float, min_age_s: float
    ) -> Baseline | None:
        """Same-hour samples from earlier days (or weeks); cached until the hour changes."""
        cache_key = (mode, int(now_s // HOUR_S))
        if cache_key in self._seasonal.cache:
            return self._seasonal.cache[cache_key]
        table = (
            self._seasonal.by_week_hour if mode is Mode.HOUR_OF_WEEK else self._seasonal.by_day_hour
        )
        past = [v for t, v in table.get(key, ()) if t < now_s - min_age_s]
        base = robust_baseline(past, mode=mode) if len(past) >= self.config.min_samples else None
        if len(self._seasonal.cache) > 4:
            self._seasonal.cache.clear()
        self._seasonal.cache[cache_key] = base
        return base

    def _score(self, value: float, base: Baseline) -> float:
        c = self.config
        scale = max(base.scale, c.rel_floor * abs(base.median), c.abs_floor, 1e-12)
        z = (value - base.median) / scale
        if c.direction is Direction.DOWN_IS_BAD:
            return -z
        return abs(z) if c.direction is Direction.BOTH else z

    def _step(self, now_s: float, value: float, base: Baseline, score: float) -> BaselineDecision:
        c, a = self.config, self._alert
        fired = cleared = False
        if a.state is AlertState.OK and score >= c.fire_score:
            a.state, a.since_s = AlertState.PENDING, now_s
        elif a.state is AlertState.PENDING and score < c.fire_score:
            a.state = AlertState.OK
        elif a.state is AlertState.FIRING and score <= c.clear_score:
            a.state, a.since_s = AlertState.RESOLVING, now_s
        elif a.state is AlertState.RESOLVING and score > c.clear_score:
            a.state = AlertState.FIRING
        if a.state is AlertState.PENDING and now_s - a.since_s >= c.for_s:
            a.state, fired = AlertState.FIRING, True
        elif a.state is AlertState.RESOLVING and now_s - a.since_s >= c.clear_for_s:
            a.state, cleared = AlertState.OK, True
        reason = self._reason(value, base, score, a.state, now_s - a.since_s)
        return BaselineDecision(now_s, value, base, score, a.state, fired, cleared, reason)

    def _reason(
        self, value: float, base: Baseline, score: float, state: AlertState, held_s: float
    ) -> str:
        c = self.config
        word = "above" if value >= base.median else "below"
        what = (
            f"{self.name} {value:.4g} is {abs(score):.1f} spreads {word} its {base.mode} "
            f"baseline {base.median:.4g} (spread {base.scale:.3g}, {base.samples} samples)"
        )
        if state is AlertState.PENDING:
            return f"{what}; pending {held_s:.0f}s of {c.for_s:.0f}s"
        if state is AlertState.FIRING:
            return f"{what}; firing: beyond {c.fire_score:g} for at least {c.for_s:.0f}s"
        if state is AlertState.RESOLVING:
            return f"{what}; resolving {held_s:.0f}s of {c.clear_for_s:.0f}s"
        return f"{what}; ok (fires beyond {c.fire_score:g})"


class DeviationMonitor:
    """One detector per (deployment, metric), created on first sight with that metric's config."""

    def __init__(
        self, configs: dict[str, BaselineConfig], default: BaselineConfig | None = None
    ) -> None:
        self.configs = configs
        self.default = default
        self._detectors: dict[tuple[str, str], BaselineDetector] = {}
        self._latest: dict[tuple[str, str], BaselineDecision] = {}

    def observe(
        self, *, deployment: str, metric: str, now_s: float, value: float
    ) -> BaselineDecision:
        key = (deployment, metric)
        detector = self._detectors.get(key)
        if detector is None:
            config = self.configs.get(metric, self.default)
            if config is None:
                known = sorted(self.configs)
                raise KeyError(f"no baseline config for metric {metric!r}; configured: {known}")
            detector = self._detectors[key] = BaselineDetector(
                config, name=f"{deployment}/{metric}"
            )
        decision = self._latest[key] = detector.observe(now_s, value)
        return decision

    def active(self) -> dict[tuple[str, str], BaselineDecision]:
        """The latest decision of every (deployment, metric) whose alert is raised."""
        return {k: d for k, d in self._latest.items() if d.active}
