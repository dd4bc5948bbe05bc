"""Scaling policies the fleet simulator can run: ours (the live ``policy.autoscaling.decide``,
through ``sim.drivers``) and two comparisons, a fixed fleet and a Knative-style KPA.

Each takes the same ``AutoscalingSnapshot`` the live autoscaler builds and answers a
``ScaleOrder`` (target, whom to drain, whom to replace). The comparisons keep their own state
between ticks (they exist only here, to be compared against); ours keeps the live policy's
frozen ``AutoscalingState``. No clock, no IO.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.decisions import DecisionLog
from shipit.core.fleet import ReplicaState
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState
from shipit.sim.drivers import autoscale


@dataclass(frozen=True, slots=True)
class ScaleOrder:
    target: int
    stop: tuple[str, ...] = ()  # drain, then stop
    replace: tuple[str, ...] = ()  # never became ready: stop now
    reason: str = ""


class ScalingPolicy(Protocol):
    name: str
    # Tick at once when a request must wait with no replica ready (the live router tells the
    # autoscaler so, rather than waiting for its next tick).
    wake_on_cold_arrival: bool

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder: ...


class OurPolicy:
    """``policy.autoscaling.decide``, exactly as the live autoscaler calls it."""

    wake_on_cold_arrival = True

    def __init__(self, config: AutoscalingConfig, name: str = "shipit") -> None:
        self.config, self.name = config, name
        self.state = AutoscalingState()

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        decision, self.state = autoscale(
            self.config, snapshot, self.state, deployment=deployment, log=log
        )
        return ScaleOrder(decision.target, decision.stop, decision.replace, decision.reason)


class FixedFleet:
    wake_on_cold_arrival = False

    def __init__(self, replicas: int) -> None:
        self.replicas, self.name = replicas, f"fixed fleet ({replicas}, sized for the peak)"

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        return ScaleOrder(self.replicas, reason="fixed")


class KnativeStyle:
    """Knative's KPA: desired = ceil(concurrency over a 60 s stable window / (target x
    utilization)); panic when the 6 s window wants 2x the ready replicas (scale up to it, never
    down, until 60 s pass without panic); scale down at once otherwise; min 1, no hold."""

    wake_on_cold_arrival = False

    def __init__(self, config: AutoscalingConfig, min_replicas: int = 1) -> None:
        self.config, self.min_replicas, self.name = config, min_replicas, "knative-style"
        self.samples: deque[tuple[float, float]] = deque()
        self.panic_until_s = -math.inf

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        c, now = self.config, snapshot.now_s
        live = [
            r
            for r in snapshot.replicas
            if r.state not in (ReplicaState.DRAINING, ReplicaState.STOPPED)
        ]
        ready = sum(r.state is ReplicaState.READY for r in live)
        self.samples.append((now, float(sum(r.in_flight for r in live) + snapshot.queued)))
        while self.samples and now - self.samples[0][0] > c.autoscaling_window_s:
            self.samples.popleft()
        unit = c.target_concurrency * c.target_utilization
        stable = sum(v for _, v in self.samples) / len(self.samples)
        recent = [v for t, v in self.samples if now - t <= c.panic_window_s]
        panic_want = math.ceil(sum(recent) / len(recent) / unit)
        if ready and panic_want >= 2 * ready:
            self.panic_until_s = now + c.autoscaling_window_s
        want = math.ceil(stable / unit)
        if now < self.panic_until_s:
            want = max(panic_want, len(live))
        target = min(max(want, self.min_replicas), c.max_replicas)
        order = sorted(live, key=lambda r: (r.state is ReplicaState.READY, r.in_flight))
        stop = tuple(r.replica_id for r in order[: max(len(live) - target, 0)])
        return ScaleOrder(target, stop, reason=f"stable {stable:.1f}, want {want}")
