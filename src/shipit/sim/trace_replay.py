"""Replay a request trace through the fleet simulator under one scaling policy, and score it.

``ReplaySetup`` says what replays (replica, deployment, policy spec, bounds, warm-up);
``replay_trace`` builds the policy (``make_policy``: ours, a fixed fleet or a peer), runs
``FleetSim`` and returns a ``ReplayScore``: TTFT SLO attainment and P50/P99, requests dropped,
replica-seconds against the oracle's (``sim.oracle``), peak replicas and replica starts.

Warm-up: the trace's last ``warmup_s`` seconds replay first, so the fleet meets the trace
already sized for it; only what happens after the warm-up is scored (requests arriving after
it, replica-seconds spent after it, replicas started after it). Progress is reported through a
callback with the simulated time. Pure: no clock, no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import DeploymentConfig
from shipit.core.decisions import DecisionLog
from shipit.core.errors import ShipitError
from shipit.engine.sim_timing import ReplicaModel, ReplicaTiming
from shipit.policy.autoscaling import AutoscalingSnapshot
from shipit.sim import peers
from shipit.sim.fleet import FleetSim
from shipit.sim.oracle import oracle, prefill_s
from shipit.sim.policies import FixedFleet, KnativeStyle, OurPolicy, ScaleOrder, ScalingPolicy
from shipit.sim.results import SimRequest, SimResult, percentile

POLICIES = ("shipit", "knative", "keda", "ray", "skyserve", "fixed:N")
Progress = Callable[[float, float], None]  # (simulated now, simulated end)


@dataclass(frozen=True, slots=True)
class ReplaySetup:
    replica: ReplicaModel
    deployment: DeploymentConfig
    scaling: AutoscalingConfig  # ours; the peers read bounds, windows and target from it
    policy: str = "shipit"
    ttft_slo_s: float = 2.0
    warmup_s: float = 0.0
    drain_s: float = 120.0  # simulated after the last arrival, so the last requests finish


@dataclass(frozen=True, slots=True)
class ReplayScore:
    policy: str
    requests: int
    slo_attainment: float
    # Among the requests whose prompt alone (on an idle replica) fits the SLO: no fleet can
    # serve the others in time, so this is the share a scaling policy is accountable for.
    feasible_attainment: float
    infeasible: int
    ttft_p50_s: float | None
    ttft_p99_s: float | None  # None: more than 1 % not served
    dropped: int
    replica_seconds: float
    oracle_replica_seconds: float
    peak_replicas: int
    replica_starts: int
    oracle_peak_replicas: int
    # Routing: the replicas' own prefix-cache hits over queries (tokens), requests answered
    # and prompt tokens computed (queries minus hits) per replica.
    prefix_hit_rate: float | None = None
    requests_per_replica: tuple[tuple[str, int], ...] = ()
    computed_tokens_per_replica: tuple[tuple[str, int], ...] = ()

    @property
    def ratio(self) -> float:
        return self.replica_seconds / self.oracle_replica_seconds

    def routing_dict(self) -> dict[str, object]:
        """The routing figures: hit rate, and max/mean load in requests and computed tokens."""
        return {
            "prefix_hit_rate": _r4(self.prefix_hit_rate),
            "max_over_mean_requests": _r4(max_over_mean(self.requests_per_replica)),
            "max_over_mean_computed_tokens": _r4(max_over_mean(self.computed_tokens_per_replica)),
            "requests_per_replica": dict(self.requests_per_replica),
            "computed_tokens_per_replica": dict(self.computed_tokens_per_replica),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "requests": self.requests,
            "slo_attainment": round(self.slo_attainment, 4),
            "feasible_attainment": round(self.feasible_attainment, 4),
            "infeasible_requests": self.infeasible,
            "ttft_p50_s": _r(self.ttft_p50_s),
            "ttft_p99_s": _r(self.ttft_p99_s),
            "dropped": self.dropped,
            "replica_seconds": round(self.replica_seconds),
            "oracle_replica_seconds": round(self.oracle_replica_seconds),
            "ratio_to_oracle": round(self.ratio, 3),
            "peak_replicas": self.peak_replicas,
            "replica_starts": self.replica_starts,
            "oracle_peak_replicas": self.oracle_peak_replicas,
            **self.routing_dict(),
        }


def max_over_mean(counts: Sequence[tuple[str, int]]) -> float | None:
    """The busiest replica's share over the mean (1.0: perfectly even); None with no load."""
    values = [v for _, v in counts]
    total = sum(values)
    return max(values) * len(values) / total if total else None


def _r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def make_policy(spec: str, scaling: AutoscalingConfig) -> tuple[ScalingPolicy, int]:
    """The policy named ``spec`` and how many replicas it starts with (pre-warmed)."""
    if spec.startswith("fixed:"):
        try:
            n = int(spec.removeprefix("fixed:"))
        except ValueError:
            n = 0
        if n < 1:
            raise ShipitError(
                f"policy {spec!r}: fixed:N takes a replica count >= 1, e.g. fixed:4",
                field="policy",
            )
        return FixedFleet(n), n
    floor = max(scaling.min_replicas, 1)
    if spec == "shipit":
        return OurPolicy(scaling), scaling.min_replicas
    if spec == "knative":
        return KnativeStyle(scaling.model_copy(update={"min_replicas": floor})), floor
    if spec == "keda":
        return peers.KedaQueueLength(scaling), scaling.min_replicas
    if spec == "ray":
        return peers.RayServeDefault(scaling), floor
    if spec == "skyserve":
        return peers.SkyServeRequestRate(scaling), floor
    raise ShipitError(
        f"policy {spec!r} is not known; use one of {', '.join(POLICIES)}", field="policy"
    )


class _Reporting:
    """Wraps a policy to report the simulated time every ``every_s`` (the progress bar)."""

    def __init__(self, inner: ScalingPolicy, end_s: float, report: Progress) -> None:
        self.inner, self.end_s, self.report = inner, end_s, report
        self.name, self.wake_on_cold_arrival = inner.name, inner.wake_on_cold_arrival
        self.next_s = 0.0

    def tick(
        self, snapshot: AutoscalingSnapshot, *, deployment: str, log: DecisionLog
    ) -> ScaleOrder:
        if snapshot.now_s >= self.next_s:
            self.report(snapshot.now_s, self.end_s)
            self.next_s = snapshot.now_s + max(self.end_s / 100, 1.0)
        return self.inner.tick(snapshot, deployment=deployment, log=log)


def with_warmup(trace: Sequence[SimRequest], warmup_s: float) -> list[SimRequest]:
    """The trace's last ``warmup_s`` seconds first (the trace repeated when shorter), then the
    whole trace ``warmup_s`` later."""
    if warmup_s <= 0 or not trace:
        return list(trace)
    period = trace[-1].arrival_s + (trace[-1].arrival_s / max(len(trace) - 1, 1))
    head: list[SimRequest] = []
    shift = warmup_s - period  # where the copy that ends at warmup_s starts
    while shift + period > 0:
        head = [
            replace(q, arrival_s=q.arrival_s + shift) for q in trace if q.arrival_s + shift >= 0
        ] + head
        shift -= period
    return head + [replace(q, arrival_s=q.arrival_s + warmup_s) for q in trace]


def replay_trace(
    setup: ReplaySetup,
    trace: Sequence[SimRequest],
    *,
    timing: ReplicaTiming | None = None,
    progress: Progress | None = None,
) -> ReplayScore:
    if not trace:
        raise ShipitError("the trace has no requests", field="trace")
    timing = timing or setup.replica.resolve()
    policy, initial = make_policy(setup.policy, setup.scaling)
    full = with_warmup(trace, setup.warmup_s)
    start = max(setup.warmup_s, 0.0)
    end = full[-1].arrival_s + setup.drain_s
    if progress is not None:
        policy = _Reporting(policy, end, progress)
    sim = FleetSim(policy, setup.replica, setup.deployment, initial_replicas=initial, timing=timing)
    result = sim.run(full, end)
    served: dict[str, int] = dict.fromkeys(sorted(sim.replicas), 0)
    for r in result.requests:
        if r.status == 200 and r.replica_id in served and r.arrival_s >= setup.warmup_s:
            served[r.replica_id] += 1
    blocks = {rid: rep.engine.blocks for rid, rep in sorted(sim.replicas.items())}
    queries = sum(b.prefix_cache_queries for b in blocks.values())
    hits = sum(b.prefix_cache_hits for b in blocks.values())
    spans = [
        (r.started_s, r.stopped_s if r.stopped_s is not None else end)
        for r in sim.replicas.values()
    ]
    floor = oracle(
        trace,
        timing,
        end_s=trace[-1].arrival_s + 1e-9,
        max_concurrency=setup.deployment.queueing.max_concurrency,
    )
    slow = frozenset(f"q{i}" for i, q in enumerate(full) if prefill_s(timing, q) > setup.ttft_slo_s)
    scored = score(
        result,
        spans,
        infeasible=slow,
        start_s=start,
        end_s=full[-1].arrival_s,  # the oracle's span: the drain after it is not counted
        slo_s=setup.ttft_slo_s,
        oracle_replica_seconds=floor.replica_seconds,
        oracle_peak=floor.peak,
    )
    return replace(
        scored,
        prefix_hit_rate=hits / queries if queries else None,
        requests_per_replica=tuple(served.items()),
        computed_tokens_per_replica=tuple(
            (rid, b.prefix_cache_queries - b.prefix_cache_hits) for rid, b in blocks.items()
        ),
    )


def score(
    result: SimResult,
    spans: Sequence[tuple[float, float]],
    *,
    infeasible: frozenset[str] = frozenset(),
    start_s: float,
    end_s: float,
    slo_s: float,
    oracle_replica_seconds: float,
    oracle_peak: int,
) -> ReplayScore:
    """The figures over ``[start_s, end_s]``: requests arriving in it, replicas' time in it."""
    reqs = [r for r in result.requests if r.arrival_s >= start_s]
    ttfts = [r.ttft_s for r in reqs if r.status == 200 and r.ttft_s is not None]
    dropped = sum(1 for r in reqs if r.status != 200)
    met = sum(1 for t in ttfts if t <= slo_s)
    ok = [r for r in reqs if r.request_id not in infeasible]
    ok_met = sum(1 for r in ok if r.status == 200 and r.ttft_s is not None and r.ttft_s <= slo_s)
    used = sum(max(min(b, end_s) - max(a, start_s), 0.0) for a, b in spans)
    return ReplayScore(
        policy=result.policy,
        requests=len(reqs),
        slo_attainment=met / len(reqs) if reqs else 1.0,
        feasible_attainment=ok_met / len(ok) if ok else 1.0,
        infeasible=len(reqs) - len(ok),
        ttft_p50_s=percentile(ttfts, 50) if ttfts else None,
        ttft_p99_s=None if dropped * 100 > len(reqs) else percentile(ttfts, 99),
        dropped=dropped,
        replica_seconds=used,
        oracle_replica_seconds=oracle_replica_seconds,
        peak_replicas=_peak(spans, start_s),
        replica_starts=sum(1 for a, _ in spans if a >= start_s),
        oracle_peak_replicas=oracle_peak,
    )


def _peak(spans: Sequence[tuple[float, float]], start_s: float) -> int:
    events = sorted(
        [(max(a, start_s), 1) for a, b in spans if b > start_s]
        + [(b, -1) for a, b in spans if b > start_s]
    )
    peak = live = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak
