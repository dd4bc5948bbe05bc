"""What a fleet simulation reports: totals, per region, per plane and pool, and time series.

``FleetTally`` accumulates while the simulator runs (plain counters and lists, cheap to bump);
``FleetTally.as_dict`` is the JSON the CLI prints and writes, and the plots read back.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FleetTally:
    regions: tuple[str, ...]
    planes: tuple[str, ...]
    requests: list[float] = field(default_factory=list)  # per region
    met: list[float] = field(default_factory=list)  # per region: TTFT within the SLO
    failed: float = 0.0  # sent to a plane that was down or a dead GPU before detection
    unrouted: float = 0.0  # no plane could take them (residency, every plane out)
    dropped: float = 0.0  # waited past the queue timeout
    interrupted: float = 0.0  # in flight on a replica that was pre-empted or died
    tokens: float = 0.0  # served, input + output
    routed: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    routed_to: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    pool_choices: Counter[str] = field(default_factory=Counter)
    preemptions: int = 0
    gpu_failures: int = 0
    cordons: int = 0
    cordons_held: int = 0
    recoveries: int = 0
    recovery_s: list[float] = field(default_factory=list)
    failovers: list[dict[str, Any]] = field(default_factory=list)
    placements: Counter[str] = field(default_factory=Counter)
    scale_decisions: Counter[str] = field(default_factory=Counter)
    events: int = 0  # timed events handled (replica ready, notices, failures, outages...)
    decisions: int = 0  # policy calls: routing, autoscaling, placement, failover, pools, faults
    series: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.requests = [0.0] * len(self.regions)
        self.met = [0.0] * len(self.regions)

    def sample(self, row: dict[str, Any]) -> None:
        for k, v in row.items():
            self.series.setdefault(k, []).append(v)

    def as_dict(
        self,
        *,
        cost: dict[str, dict[str, float]],
        gpu_hours: dict[str, dict[str, float]],
        replicas_end: dict[str, dict[str, int]],
        peak_replicas: dict[str, int],
        hours: float,
        started: int,
        refused: int,
    ) -> dict[str, Any]:
        total = sum(self.requests)
        met = sum(self.met)
        usd = sum(v for by_pool in cost.values() for v in by_pool.values())
        per_region = {
            name: {
                "requests": round(self.requests[i]),
                "slo_attainment": _ratio(self.met[i], self.requests[i]),
            }
            for i, name in enumerate(self.regions)
        }
        by_pool: defaultdict[str, float] = defaultdict(float)
        for plane_cost in cost.values():
            for pool, v in plane_cost.items():
                by_pool[pool] += v
        return {
            "hours": hours,
            "requests": round(total),
            "slo_attainment": _ratio(met, total),
            "regions": per_region,
            "failed": round(self.failed),
            "unrouted": round(self.unrouted),
            "dropped": round(self.dropped),
            "interrupted": round(self.interrupted),
            "tokens": round(self.tokens),
            "cost_usd": round(usd, 2),
            "cost_usd_per_hour": round(usd / hours, 2) if hours else 0.0,
            "usd_per_million_tokens": round(usd / self.tokens * 1e6, 4) if self.tokens else None,
            "cost_usd_by_pool": {k: round(v, 2) for k, v in sorted(by_pool.items())},
            "cost_usd_by_plane": {
                p: {k: round(v, 2) for k, v in c.items()} for p, c in cost.items()
            },
            "gpu_hours_by_plane": {
                p: {k: round(v, 1) for k, v in c.items()} for p, c in gpu_hours.items()
            },
            "replicas_end": replicas_end,
            "peak_replicas": peak_replicas,
            "replicas_started": started,
            "starts_refused": refused,
            "routing": {k: round(v) for k, v in sorted(self.routed.items())},
            "routed_to": {k: round(v) for k, v in sorted(self.routed_to.items())},
            "pool_choices": dict(sorted(self.pool_choices.items())),
            "preemptions": self.preemptions,
            "gpu_failures": self.gpu_failures,
            "cordons": self.cordons,
            "cordons_held": self.cordons_held,
            "recoveries": self.recoveries,
            "mean_recovery_s": (
                round(sum(self.recovery_s) / len(self.recovery_s), 1) if self.recovery_s else None
            ),
            "failovers": self.failovers,
            "placements": dict(sorted(self.placements.items())),
            "scale_decisions": dict(sorted(self.scale_decisions.items())),
            "events": self.events,
            "decisions": self.decisions,
            "series": self.series,
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b > 0 else None
