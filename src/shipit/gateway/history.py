"""A short history of the gateway's own counters, so a rate can cover a meaningful window.

``shipit top --once`` used to compute req/s from two scrapes one second apart: right after a
burst it showed 0.0. The gateway keeps a cumulative reading per deployment (``telemetry.window``
readings of its registry) every ``interval_s`` for ``keep_s``, and ``/shipit/status?window_s=W``
answers with the figures over the last ``W`` seconds (or as much history as there is); ``series``
cuts the history into steps for the console's charts. Owns the ring of readings and the
sampling loop; the arithmetic is ``telemetry.window``'s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from shipit.telemetry.window import DeploymentReading, readings, window

KEEP_S = 900.0  # the longest window answered
INTERVAL_S = 1.0


class CounterHistory:
    def __init__(
        self,
        read: Callable[[], Iterable[Sample]],
        now: Callable[[], float],
        *,
        keep_s: float = KEEP_S,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._read = read
        self._now = now
        self.keep_s = keep_s
        self.interval_s = interval_s
        self._points: deque[tuple[float, dict[str, DeploymentReading]]] = deque()

    def sample(self) -> None:
        now = self._now()
        self._points.append((now, readings(self._read())))
        while self._points and now - self._points[0][0] > self.keep_s:
            self._points.popleft()

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def window(self, window_s: float) -> dict[str, Any] | None:
        """Per-deployment figures over the last ``window_s`` (from the newest kept reading at
        least that old, else the oldest); ``None`` before there is any history."""
        if not self._points:
            return None
        now = self._now()
        current = readings(self._read())
        start_t, start = self._points[0]
        for t, reading in self._points:
            if now - t >= window_s:
                start_t, start = t, reading
            else:
                break
        span = now - start_t
        if span <= 0:
            return None
        return {
            "seconds": round(span, 3),
            "deployments": {
                name: asdict(window(start.get(name), newer, span))
                for name, newer in current.items()
            },
        }

    def series(self, span_s: float, step_s: float) -> dict[str, list[dict[str, Any]]]:
        """Per deployment, the figures of each ``step_s`` over the last ``span_s`` (oldest
        first; ``t_s`` is the step's end, seconds before now, so 0 or negative): the console's
        charts of latency and SLO attainment over time."""
        if not self._points:
            return {}
        now = self._now()
        picked: list[tuple[float, dict[str, DeploymentReading]]] = []
        for t, reading in reversed(self._points):  # from the newest: the last step ends now
            if now - t > span_s + step_s:
                break
            if not picked or picked[-1][0] - t >= step_s:
                picked.append((t, reading))
        picked.reverse()
        out: dict[str, list[dict[str, Any]]] = {}
        for (t0, older), (t1, newer) in itertools.pairwise(picked):
            for name, current in newer.items():
                stats = asdict(window(older.get(name), current, t1 - t0))
                out.setdefault(name, []).append({"t_s": round(t1 - now, 3), **stats})
        return out


def window_param(query: bytes) -> float | None:
    """``window_s`` from a query string; absent or not a positive number: ``None``."""
    values = parse_qs(query.decode("latin-1")).get("window_s")
    try:
        value = float(values[-1]) if values else math.nan
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


def registry_reader(registry: CollectorRegistry) -> Callable[[], Iterable[Sample]]:
    def read() -> Iterable[Sample]:
        return [s for family in registry.collect() for s in family.samples]

    return read
