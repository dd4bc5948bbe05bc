"""Retry budget and passive outlier ejection: the two rules that keep retries from melting a fleet.

``RetryBudget`` (as in Finagle and Envoy): every request deposits ``ratio`` of a retry, time
deposits ``min_per_s``, a retry withdraws one; the balance is capped, so a failing fleet sees
at most ~``ratio`` extra load. ``OutlierDetector``: ``consecutive_failures`` in a row eject a
replica for ``base_ejection_s`` x 2^(ejections so far), capped at ``max_ejection_s``, never more
than ``max_ejected_fraction`` of the fleet. Pure: ``now_s`` comes in, decisions go out.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.config.gateway import OutlierConfig


class RetryBudget:
    def __init__(self, *, ratio: float, min_per_s: float, cap: float | None = None) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.cap = cap if cap is not None else max(10.0, min_per_s)
        self._balance = self.cap
        self._last_s: float | None = None

    def _refill(self, now_s: float) -> None:
        if self._last_s is not None and now_s > self._last_s:
            self._balance = min(self.cap, self._balance + (now_s - self._last_s) * self.min_per_s)
        self._last_s = now_s if self._last_s is None else max(self._last_s, now_s)

    def on_request(self, now_s: float) -> None:
        self._refill(now_s)
        self._balance = min(self.cap, self._balance + self.ratio)

    def try_retry(self, now_s: float) -> bool:
        """Withdraw one retry if the budget holds one."""
        self._refill(now_s)
        if self._balance >= 1.0 - 1e-9:  # ten deposits of 0.1 make one retry
            self._balance -= 1.0
            return True
        return False

    @property
    def balance(self) -> float:
        return self._balance


@dataclass(frozen=True, slots=True)
class Ejection:
    replica_id: str
    until_s: float
    reason: str


@dataclass(slots=True)
class _Health:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until_s: float | None = None


class OutlierDetector:
    def __init__(self, config: OutlierConfig) -> None:
        self.config = config
        self._health: dict[str, _Health] = {}

    def ejected_until(self, replica_id: str, now_s: float) -> float | None:
        h = self._health.get(replica_id)
        if h is None or h.ejected_until_s is None or h.ejected_until_s <= now_s:
            return None
        return h.ejected_until_s

    def on_success(self, replica_id: str) -> None:
        h = self._health.get(replica_id)
        if h is not None:
            h.consecutive_failures = 0

    def on_failure(
        self, replica_id: str, *, now_s: float, fleet_size: int, why: str
    ) -> Ejection | None:
        """Count a failure; return an ``Ejection`` when this one crosses the threshold."""
        h = self._health.setdefault(replica_id, _Health())
        h.consecutive_failures += 1
        cfg = self.config
        if h.consecutive_failures < cfg.consecutive_failures:
            return None
        if self.ejected_until(replica_id, now_s) is not None:
            return None
        ejected = sum(1 for rid in self._health if self.ejected_until(rid, now_s) is not None)
        if fleet_size <= 0 or (ejected + 1) > cfg.max_ejected_fraction * fleet_size:
            return None
        duration = min(cfg.base_ejection_s * (2**h.ejections), cfg.max_ejection_s)
        h.ejections += 1
        h.ejected_until_s = now_s + duration
        h.consecutive_failures = 0
        return Ejection(
            replica_id,
            h.ejected_until_s,
            f"{cfg.consecutive_failures} consecutive failures (last: {why}); "
            f"ejected for {duration:g}s",
        )

    def forget(self, replica_id: str) -> None:
        self._health.pop(replica_id, None)
