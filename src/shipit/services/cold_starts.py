"""Cold-start accounting of one deployment: start requested -> ready, in phases.

Owns ``ColdStarts``: the replicas whose start was requested and that are not ready yet
(``started``, or found ``STARTING`` when first seen: the initial fleet), and, once the
registry shows one ``READY``, its ``ColdStart`` record (the placement's phases where the
backend knows them, e.g. a Kubernetes pod's schedule, image pull and container start, read
through the injected ``placement``; the replica's own phases from its ``/shipit/startup``
report, read through the injected probe; plus ``health``: the rest, spawn and the wait for the
gateway's health probe), the ``shipit_cold_start*`` metrics and the last
records for ``shipit status``. ``account`` returns the replicas that came up, which end a crash
streak in the lifecycle policy. It decides nothing and starts or stops nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.telemetry.instruments import ControlPlaneMetrics

logger = logging.getLogger("shipit.autoscaler")

StartupProbe = Callable[[str], Awaitable[Mapping[str, Any] | None]]
# (deployment, replica id) -> the phases before the replica's process runs, in order.
PlacementPhases = Callable[[str, str], Awaitable[tuple[tuple[str, float], ...]]]


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Start requested to ready, in phases (the replica's own, plus ``health``: the spawn and
    the time until the gateway's health probe saw it ready)."""

    replica_id: str
    total_s: float
    phases_s: tuple[tuple[str, float], ...]
    weights_source: str | None
    at_unix_s: float


class ColdStarts:
    def __init__(
        self,
        deployment: str,
        *,
        kept: int,
        metrics: ControlPlaneMetrics | None = None,
        probe: StartupProbe | None = None,
        placement: PlacementPhases | None = None,
        wall: Callable[[], float],
    ) -> None:
        self.name = deployment
        self.metrics = metrics
        self.probe = probe
        self.placement = placement
        self.wall = wall
        self.recent: deque[ColdStart] = deque(maxlen=kept)
        self._pending: dict[str, float] = {}  # replica id -> start requested at
        self._seen: set[str] = set()

    def started(self, replica_ids: Iterable[str], at_s: float) -> None:
        """Starts requested at ``at_s`` (the autoscaler's clock)."""
        for rid in replica_ids:
            self._pending[rid] = at_s
            self._seen.add(rid)

    def forget(self, replica_id: str) -> None:
        """It is being stopped: its cold start will not finish."""
        self._pending.pop(replica_id, None)

    async def account(self, records: Iterable[ReplicaRecord]) -> tuple[str, ...]:
        """Record the cold starts that finished among ``records`` (the managed replicas);
        the ids that came up."""
        by_id = {r.replica_id: r for r in records}
        for rid, record in by_id.items():
            if rid not in self._seen:
                self._seen.add(rid)
                if record.state is ReplicaState.STARTING:  # started before us (initial fleet)
                    self._pending.setdefault(rid, record.state_since_s)
        came_up: list[str] = []
        for rid, requested_s in list(self._pending.items()):
            found = by_id.get(rid)
            if found is None:
                del self._pending[rid]
            elif found.state is ReplicaState.READY:
                del self._pending[rid]
                came_up.append(rid)
                total_s = max(found.state_since_s - requested_s, 0.0)
                placed = await self._placed(rid)
                self._done(rid, total_s, await self._report(found.url), placed)
        return tuple(came_up)

    async def _report(self, url: str) -> Mapping[str, Any] | None:
        if self.probe is None:
            return None
        try:
            return await self.probe(url)
        except Exception:  # the numbers are nice to have; the replica is ready regardless
            logger.debug("startup probe of %s failed", url, exc_info=True)
            return None

    async def _placed(self, replica_id: str) -> tuple[tuple[str, float], ...]:
        if self.placement is None:
            return ()
        try:
            return await self.placement(self.name, replica_id)
        except Exception:  # as with the report: nice to have
            logger.debug("placement phases of %s failed", replica_id, exc_info=True)
            return ()

    def _done(
        self,
        replica_id: str,
        total_s: float,
        report: Mapping[str, Any] | None,
        placed: tuple[tuple[str, float], ...] = (),
    ) -> None:
        reported: dict[str, float] = dict(placed)
        source = None
        if report is not None:
            raw = report.get("phases_s", {})
            if isinstance(raw, Mapping):
                reported |= {str(k): float(v) for k, v in raw.items()}
            source = report.get("weights_source")
        phases = {**reported, "health": max(total_s - sum(reported.values()), 0.0)}
        cold = ColdStart(
            replica_id=replica_id,
            total_s=round(total_s, 4),
            phases_s=tuple((k, round(v, 4)) for k, v in phases.items()),
            weights_source=str(source) if source is not None else None,
            at_unix_s=self.wall(),
        )
        self.recent.append(cold)
        if self.metrics is not None:
            self.metrics.cold_start.labels(deployment=self.name).observe(total_s)
            for phase, seconds in phases.items():
                self.metrics.cold_start_phase.labels(deployment=self.name, phase=phase).observe(
                    seconds
                )
        detail = ", ".join(f"{k} {v:.2f}s" for k, v in phases.items())
        logger.info("%s: cold start of %s: %.2fs (%s)", self.name, replica_id, total_s, detail)
