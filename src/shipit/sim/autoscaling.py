"""A discrete-event simulation of one autoscaled deployment, in simulated time.

Owns the event loop (arrivals, request completions, replicas becoming ready, autoscaler ticks),
a FIFO gateway queue with a per-replica concurrency cap and least-loaded routing, replicas whose
timing comes from the capacity planner's roofline (a request admitted next to ``b`` others
takes one prefill step, then ``output_tokens - 1`` decode steps at batch ``b + 1``), cold
starts of a fixed length, drain-before-stop on scale-down, and a hold limit after which a
queued request is dropped (the live gateway's 503). Scaling policies plug in as a
``ScalingPolicy``: ours is the real ``policy.autoscaling.decide``; ``FixedFleet`` and
``KnativeStyle`` are comparisons. It must not sleep, read the clock or do IO.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from shipit.capacity.catalog import load_catalog
from shipit.capacity.roofline import step_time_s
from shipit.config.autoscaling import AutoscalingConfig
from shipit.policy.autoscaling import (
    AutoscalingSnapshot,
    AutoscalingState,
    ReplicaLoad,
    ReplicaPhase,
    decide,
)


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """One replica: accelerator, model, the gateway's cap on concurrent requests, cold start."""

    gpu: str = "H100"
    model: str = "llama-3.1-8b"
    tp: int = 1
    slots: int = 16
    cold_start_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ScaleOrder:
    target: int
    stop: tuple[str, ...] = ()


class ScalingPolicy(Protocol):
    name: str
    wake_on_cold_arrival: bool

    def tick(self, snapshot: AutoscalingSnapshot) -> ScaleOrder: ...


class OurPolicy:
    """``policy.autoscaling.decide``, exactly as the live autoscaler calls it."""

    wake_on_cold_arrival = True

    def __init__(self, config: AutoscalingConfig, name: str = "shipit") -> None:
        self.config, self.name = config, name
        self.state = AutoscalingState()

    def tick(self, snapshot: AutoscalingSnapshot) -> ScaleOrder:
        decision, self.state = decide(self.config, snapshot, self.state)
        return ScaleOrder(decision.target, decision.stop)


class FixedFleet:
    wake_on_cold_arrival = False

    def __init__(self, replicas: int) -> None:
        self.replicas, self.name = replicas, f"fixed fleet ({replicas}, sized for the peak)"

    def tick(self, snapshot: AutoscalingSnapshot) -> ScaleOrder:
        return ScaleOrder(self.replicas)


class KnativeStyle:
    """Knative's KPA: desired = ceil(concurrency over a 60 s stable window / (target x
    utilization)); panic when the 6 s window wants 2x the ready replicas (scale up to it, never
    down, until 60 s pass without panic); scale down at once otherwise; min 1, no hold."""

    wake_on_cold_arrival = False

    def __init__(self, config: AutoscalingConfig, min_replicas: int = 1) -> None:
        self.config, self.min_replicas, self.name = config, min_replicas, "knative-style"
        self.samples: deque[tuple[float, float]] = deque()
        self.panic_until_s = -math.inf

    def tick(self, snapshot: AutoscalingSnapshot) -> ScaleOrder:
        c, now = self.config, snapshot.now_s
        live = [r for r in snapshot.replicas if r.state is not ReplicaPhase.DRAINING]
        ready = sum(r.state is ReplicaPhase.READY for r in live)
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
        order = sorted(live, key=lambda r: (r.state is ReplicaPhase.READY, r.in_flight))
        stop = tuple(r.replica_id for r in order[: max(len(live) - target, 0)])
        return ScaleOrder(target, stop)


@dataclass(slots=True)
class _Replica:
    rid: str
    started_s: float
    ready_s: float | None = None
    draining: bool = False
    stopped_s: float | None = None
    running: int = 0
    since_s: float = 0.0


@dataclass(slots=True)
class SimResult:
    policy: str
    ttft_s: list[float] = field(default_factory=list)  # served requests
    dropped: int = 0
    replica_seconds: float = 0.0
    peak_replicas: int = 0
    scale_events: int = 0

    def attainment(self, ttft_target_s: float) -> float:
        total = len(self.ttft_s) + self.dropped
        met = sum(1 for t in self.ttft_s if t <= ttft_target_s)
        return met / total if total else 1.0

    def ttft_p99_s(self) -> float:
        if self.dropped:
            return math.inf if self.dropped * 100 > len(self.ttft_s) + self.dropped else self._p(99)
        return self._p(99)

    def _p(self, q: float) -> float:
        data = sorted(self.ttft_s)
        return data[min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1)] if data else 0.0


class Timing:
    """Roofline step times of one replica, memoised on a coarse grid."""

    def __init__(self, m: ReplicaModel) -> None:
        catalog = load_catalog()
        self.model, self.gpu, self.tp = catalog.model(m.model), catalog.gpu(m.gpu), m.tp
        self._memo: dict[tuple[int, int, int], float] = {}

    def step_s(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        key = (prefill_tokens // 64 * 64, decode_seqs, context_tokens // 64 * 64)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = step_time_s(
                self.model,
                self.gpu,
                self.tp,
                self.model.native_dtype,
                prefill_tokens=key[0] or (64 if prefill_tokens else 0),
                decode_seqs=key[1],
                context_tokens=key[2],
            )
        return got


class FleetSim:
    """Runs one policy over one trace; ``run`` returns the result."""

    def __init__(
        self,
        policy: ScalingPolicy,
        replica: ReplicaModel,
        *,
        tick_s: float = 1.0,
        hold_s: float = 120.0,
        initial_replicas: int = 0,
        timing: Timing | None = None,
    ) -> None:
        self.policy, self.m, self.tick_s, self.hold_s = policy, replica, tick_s, hold_s
        self.timing = timing or Timing(replica)
        self.replicas: dict[str, _Replica] = {}
        self.queue: deque[tuple[int, SimRequest]] = deque()
        self.events: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self.result = SimResult(policy.name)
        for _ in range(initial_replicas):  # pre-warmed: ready at t=0
            r = self._start(0.0)
            r.ready_s = 0.0

    def _push(self, at_s: float, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at_s, self._seq, kind, payload))

    def _start(self, now: float) -> _Replica:
        rid = f"r{len(self.replicas)}"
        r = self.replicas[rid] = _Replica(rid, now, since_s=now)
        self._push(now + self.m.cold_start_s, "ready", rid)
        self.result.scale_events += 1
        return r

    def run(self, trace: list[SimRequest], end_s: float) -> SimResult:
        for i, req in enumerate(trace):
            self._push(req.arrival_s, "arrive", (i, req))
        t = 0.0
        while t <= end_s:
            self._push(t, "tick", None)
            t += self.tick_s
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            getattr(self, f"_on_{kind}")(now, payload)
        for r in self.replicas.values():
            stop = r.stopped_s if r.stopped_s is not None else end_s
            self.result.replica_seconds += max(stop - r.started_s, 0.0)
        return self.result

    # ----- events ---------------------------------------------------------------------------
    def _on_arrive(self, now: float, payload: object) -> None:
        self.queue.append(payload)  # type: ignore[arg-type]
        self._dispatch(now)
        if self.queue and self.policy.wake_on_cold_arrival and not self._ready():
            self._on_tick(now, None)

    def _on_ready(self, now: float, rid: object) -> None:
        r = self.replicas[str(rid)]
        if r.stopped_s is None:
            r.ready_s, r.since_s = now, now
            self._dispatch(now)

    def _on_done(self, now: float, rid: object) -> None:
        r = self.replicas[str(rid)]
        r.running -= 1
        if r.draining and r.running == 0:
            r.stopped_s = now
        self._dispatch(now)

    def _on_tick(self, now: float, _: object) -> None:
        while self.queue and now - self.queue[0][1].arrival_s > self.hold_s:
            self.queue.popleft()
            self.result.dropped += 1
        live = [r for r in self.replicas.values() if r.stopped_s is None and not r.draining]
        loads = tuple(
            ReplicaLoad(
                r.rid,
                ReplicaPhase.READY if r.ready_s is not None else ReplicaPhase.STARTING,
                r.running,
                r.since_s,
            )
            for r in live
        )
        order = self.policy.tick(AutoscalingSnapshot(now, loads, len(self.queue)))
        for rid in order.stop:
            r = self.replicas[rid]
            r.draining = True
            if r.running == 0:
                r.stopped_s = now
        for _ in range(order.target - (len(live) - len(order.stop))):
            self._start(now)
        self.result.peak_replicas = max(self.result.peak_replicas, self._live_count())

    # ----- routing --------------------------------------------------------------------------
    def _ready(self) -> list[_Replica]:
        return [
            r
            for r in self.replicas.values()
            if r.ready_s is not None and r.stopped_s is None and not r.draining
        ]

    def _live_count(self) -> int:
        return sum(1 for r in self.replicas.values() if r.stopped_s is None)

    def _dispatch(self, now: float) -> None:
        ready = self._ready()
        while self.queue and ready:
            best = min(ready, key=lambda r: r.running)
            if best.running >= self.m.slots:
                return
            _, req = self.queue.popleft()
            self._admit(best, req, now)

    def _admit(self, r: _Replica, req: SimRequest, now: float) -> None:
        b = r.running
        context = req.prompt_tokens + req.output_tokens // 2
        prefill_s = self.timing.step_s(req.prompt_tokens, b, context)
        tpot_s = self.timing.step_s(0, b + 1, context)
        r.running += 1
        self.result.ttft_s.append(now + prefill_s - req.arrival_s)
        self._push(now + prefill_s + (req.output_tokens - 1) * tpot_s, "done", r.rid)
