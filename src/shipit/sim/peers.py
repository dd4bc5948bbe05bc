"""Peer autoscalers, as their projects document their defaults, for the simulator to compare.

Each reads the same ``AutoscalingSnapshot`` ours does and keeps its own state; bounds and the
per-replica concurrency target come from our ``AutoscalingConfig`` so every policy aims at the
same load a replica should carry, and the rest are the peer's own defaults:

- ``KedaQueueLength``: KEDA's queue-length scaler driving the Kubernetes HPA: polls every
  15 s, desired = ceil((in flight + queued) / target), 10 % tolerance, scale-up at most
  max(4, 2x) a poll, scale-down to the highest desired of the last 300 s (the HPA's
  stabilisation window), to zero after a 300 s cooldown with no load, from zero at the next poll.
- ``RayServeDefault``: Ray Serve's default policy: desired = ceil(ongoing requests /
  ``target_ongoing_requests`` (2)), averaged over a 30 s look-back, every 10 s; up after it held
  30 s, down after 600 s; min 1.
- ``SkyServeRequestRate``: SkyServe's request-rate autoscaler: desired = ceil(requests per
  second over the last 60 s / target QPS per replica), up after it held 300 s, down after
  1,200 s; min 1. The target QPS is the replica's concurrency target over the recent mean
  service time, as a user would size it from a load test.
No clock, no IO.
"""

from __future__ import annotations

import math
from collections import deque

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.decisions import DecisionLog
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import AutoscalingSnapshot
from shipit.sim.policies import ScaleOrder


def _live(snapshot: AutoscalingSnapshot) -> list[ReplicaRecord]:
    gone = (ReplicaState.DRAINING, ReplicaState.STOPPED)
    return [r for r in snapshot.replicas if r.state not in gone]


def _order(live: list[ReplicaRecord], target: int, reason: str) -> ScaleOrder:
    """Stop the starting ones first, then the least busy."""
    order = sorted(live, key=lambda r: (r.state is ReplicaState.READY, r.in_flight))
    stop = tuple(r.replica_id for r in order[: max(len(live) - target, 0)])
    return ScaleOrder(target, stop, reason=reason)


class _Held:
    """Proposals over time: a target goes up (down) only once it held ``up_s`` (``down_s``)."""

    def __init__(self, up_s: float, down_s: float) -> None:
        self.up_s, self.down_s = up_s, down_s
        self.proposals: deque[tuple[float, int]] = deque()

    def apply(self, now: float, current: int, want: int) -> int:
        self.proposals.append((now, want))
        horizon = max(self.up_s, self.down_s)
        while self.proposals and now - self.proposals[0][0] > horizon:
            self.proposals.popleft()
        if want > current:
            return max(min(w for t, w in self.proposals if now - t <= self.up_s), current)
        if want < current:
            return min(max(w for t, w in self.proposals if now - t <= self.down_s), current)
        return current


class KedaQueueLength:
    wake_on_cold_arrival = False
    POLL_S, TOLERANCE, STABILIZE_DOWN_S, COOLDOWN_S = 15.0, 0.1, 300.0, 300.0

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config, self.name = config, "keda-style queue length"
        self.next_poll_s = 0.0
        self.target = 0
        self.last_active_s = -math.inf
        self.held = _Held(0.0, self.STABILIZE_DOWN_S)

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        c, now, live = self.config, snapshot.now_s, _live(snapshot)
        load = sum(r.in_flight for r in live) + snapshot.queued
        if load > 0:
            self.last_active_s = now
        if now >= self.next_poll_s:
            self.next_poll_s = now + self.POLL_S
            current = len(live)
            want = math.ceil(load / c.target_concurrency)
            if current and abs(load / (current * c.target_concurrency) - 1) <= self.TOLERANCE:
                want = current
            want = self.held.apply(now, current, want)
            if current:
                want = min(want, max(current + 4, 2 * current))
            if want == 0 and now - self.last_active_s < self.COOLDOWN_S and current:
                want = 1
            if current == 0 and load > 0:
                want = max(want, 1)
            self.target = min(max(want, c.min_replicas), c.max_replicas)
        return _order(live, self.target, f"load {load}")


class RayServeDefault:
    wake_on_cold_arrival = False
    TARGET_ONGOING, LOOK_BACK_S, INTERVAL_S, UP_S, DOWN_S = 2.0, 30.0, 10.0, 30.0, 600.0

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config, self.name = config, "ray-serve default"
        self.samples: deque[tuple[float, float]] = deque()
        self.held = _Held(self.UP_S, self.DOWN_S)
        self.next_s = 0.0
        self.target = max(config.min_replicas, 1)

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        c, now, live = self.config, snapshot.now_s, _live(snapshot)
        self.samples.append((now, float(sum(r.in_flight for r in live) + snapshot.queued)))
        while self.samples and now - self.samples[0][0] > self.LOOK_BACK_S:
            self.samples.popleft()
        if now >= self.next_s:
            self.next_s = now + self.INTERVAL_S
            ongoing = sum(v for _, v in self.samples) / len(self.samples)
            want = self.held.apply(now, len(live), math.ceil(ongoing / self.TARGET_ONGOING))
            self.target = min(max(want, c.min_replicas, 1), c.max_replicas)
        return _order(live, self.target, "ongoing")


class SkyServeRequestRate:
    wake_on_cold_arrival = False
    WINDOW_S, UP_S, DOWN_S, INTERVAL_S = 60.0, 300.0, 1200.0, 20.0

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config, self.name = config, "skyserve request-rate"
        self.arrivals: deque[tuple[float, int]] = deque()
        self.service: deque[tuple[float, int, float]] = deque()
        self.held = _Held(self.UP_S, self.DOWN_S)
        self.next_s = 0.0
        self.target = max(config.min_replicas, 1)

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        c, now, live = self.config, snapshot.now_s, _live(snapshot)
        self.arrivals.append((now, snapshot.arrivals))
        self.service.append((now, snapshot.completed, snapshot.service_s))
        while now - self.arrivals[0][0] > self.WINDOW_S:
            self.arrivals.popleft()
        while len(self.service) > 1 and now - self.service[0][0] > 10 * self.WINDOW_S:
            self.service.popleft()
        if now >= self.next_s:
            self.next_s = now + self.INTERVAL_S
            span = max(now - self.arrivals[0][0], 1.0)
            qps = (snapshot.arrivals - self.arrivals[0][1]) / span
            done = snapshot.completed - self.service[0][1]
            mean_s = (snapshot.service_s - self.service[0][2]) / done if done else 0.0
            per_replica = c.target_concurrency / mean_s if mean_s > 0 else math.inf
            want = math.ceil(qps / per_replica) if per_replica < math.inf else len(live)
            want = self.held.apply(now, len(live), want)
            self.target = min(max(want, c.min_replicas, 1), c.max_replicas)
        return _order(live, self.target, "qps")
