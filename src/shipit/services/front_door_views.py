"""What the global front door reads, as plain values: where a client is, and how loaded a plane is.

``client_place(headers, planes, default_offset_h)``: the client's UTC offset and residency tag
from its request headers: ``x-shipit-client-utc-offset`` (hours, -12 to 14), else
``x-shipit-region`` (a plane's name: the client is where that plane is), else the front door's
own offset; ``x-shipit-residency`` (a tag the request must stay within). A header that cannot be
read raises ``ClientPlaceError`` naming the header, the value and what to send.

``plane_load(status, max_concurrency)``: a plane gateway's ``/shipit/status`` answer as its
ready replicas, slots (ready replicas x each deployment's ``queueing.max_concurrency``), requests
in flight and queued. ``plane_view``: one plane for global routing, with the requests the front
door opened on it since that probe counted against its free slots. ``plane_pools`` and
``fleet_pools``: the planes' capacity pools (replicas by pool, their prices, pre-emptions, GPU
failures) from the same status answers, and their sum over the fleet with its cost an hour.

Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipit.policy.global_routing import PlaneView

OFFSET_HEADER = "x-shipit-client-utc-offset"
REGION_HEADER = "x-shipit-region"
RESIDENCY_HEADER = "x-shipit-residency"
PLANE_HEADER = "x-shipit-plane"  # response: the plane that served
ROUTE_HEADER = "x-shipit-global-route"  # response: the global routing reason code


class ClientPlaceError(ValueError):
    def __init__(self, message: str, header: str) -> None:
        super().__init__(message)
        self.message = message
        self.header = header


@dataclass(frozen=True, slots=True)
class ClientPlace:
    utc_offset_h: float
    residency: str | None
    source: str  # which header said where the client is ("default" when none did)


def client_place(
    headers: Mapping[str, str],
    planes: Sequence[tuple[str, float]],
    default_offset_h: float,
) -> ClientPlace:
    """``headers`` with lower-case names; ``planes`` as (name, utc_offset_h)."""
    residency = headers.get(RESIDENCY_HEADER)
    if residency is not None:
        residency = residency.strip()
        if not residency:
            raise ClientPlaceError(
                f"{RESIDENCY_HEADER} is empty; send a residency tag (such as eu) or leave the "
                "header out",
                RESIDENCY_HEADER,
            )
    raw = headers.get(OFFSET_HEADER)
    if raw is not None:
        try:
            offset = float(raw)
        except ValueError:
            offset = math.nan
        if not (-12.0 <= offset <= 14.0):  # NaN fails too
            raise ClientPlaceError(
                f"{OFFSET_HEADER} must be the client's hours from UTC, -12 to 14 (such as -5 "
                f"or 5.5), got {raw!r}",
                OFFSET_HEADER,
            )
        return ClientPlace(offset, residency, OFFSET_HEADER)
    region = headers.get(REGION_HEADER)
    if region is not None:
        for name, offset in planes:
            if name == region.strip():
                return ClientPlace(offset, residency, REGION_HEADER)
        known = ", ".join(name for name, _ in planes)
        raise ClientPlaceError(
            f"{REGION_HEADER} names no plane of this fleet (got {region!r}); send one of: "
            f"{known}, or {OFFSET_HEADER} with the client's hours from UTC",
            REGION_HEADER,
        )
    return ClientPlace(default_offset_h, residency, "default")


@dataclass(frozen=True, slots=True)
class PlaneLoad:
    ready_replicas: int = 0
    slots: int = 0  # ready replicas x their deployment's max_concurrency
    in_flight: int = 0  # on ready replicas
    queued: int = 0  # waiting at the plane's gateway

    @property
    def free_slots(self) -> int:
        return max(self.slots - self.in_flight, 0)


def plane_load(status: Mapping[str, Any], max_concurrency: Mapping[str, int]) -> PlaneLoad:
    """From ``/shipit/status``; a deployment the mapping does not name counts 8 per replica
    (the gateway's default)."""
    ready = slots = in_flight = queued = 0
    for dep in status.get("deployments", ()):
        per_replica = max_concurrency.get(str(dep.get("name")), 8)
        queued += int(dep.get("queue_depth", 0))
        for r in dep.get("replicas", ()):
            if r.get("state") == "ready":
                ready += 1
                slots += per_replica
                in_flight += int(r.get("in_flight", 0))
    return PlaneLoad(ready, slots, in_flight, queued)


def plane_view(
    name: str,
    utc_offset_h: float,
    residency: frozenset[str],
    *,
    serving: bool,
    load: PlaneLoad,
    opened_since_probe: int = 0,
) -> PlaneView:
    """The plane for global routing: its probed load, corrected by the change in requests the
    front door has open on it since that probe (so a burst between two probes does not all go
    to one plane, and slots freed since count again), within 0..slots."""
    free = min(max(load.free_slots - opened_since_probe, 0), load.slots)
    return PlaneView(
        name=name,
        utc_offset_h=utc_offset_h,
        serving=serving,
        free_slots=free,
        queued=load.queued,
        slots=load.slots,
        residency=residency,
    )


@dataclass(frozen=True, slots=True)
class PlanePoolsView:
    """A plane's capacity pools as its last ``/shipit/status`` showed them (``pools``)."""

    replicas_by_pool: Mapping[str, int] = field(default_factory=dict)
    usd_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)  # by pool
    preemptions: int = 0
    gpu_failures: int = 0


def plane_pools(status: Mapping[str, Any]) -> PlanePoolsView | None:
    """The ``pools`` part of a plane's status; None when the plane runs no pools."""
    pools = status.get("pools")
    if not isinstance(pools, Mapping):
        return None
    prices = {
        str(name): float(cfg.get("usd_per_gpu_hour", 0.0))
        for name, cfg in (pools.get("pools") or {}).items()
        if isinstance(cfg, Mapping)
    }
    return PlanePoolsView(
        {str(k): int(v) for k, v in (pools.get("replicas_by_pool") or {}).items()},
        prices,
        int(pools.get("preemptions", 0)),
        int(pools.get("gpu_failures", 0)),
    )


def fleet_pools(
    planes: Mapping[str, PlanePoolsView | None], gpus_per_replica: int
) -> dict[str, Any]:
    """``/shipit/fleet``'s ``pools``: replicas by pool over every plane that reported its pools,
    what they cost an hour at their pools' prices, pre-emptions and GPU failures so far."""
    by_pool: dict[str, int] = {}
    usd = 0.0
    preemptions = failures = 0
    reported = []
    for name, view in planes.items():
        if view is None:
            continue
        reported.append(name)
        for pool, n in view.replicas_by_pool.items():
            by_pool[pool] = by_pool.get(pool, 0) + n
            usd += n * gpus_per_replica * view.usd_per_gpu_hour.get(pool, 0.0)
        preemptions += view.preemptions
        failures += view.gpu_failures
    return {
        "planes_reporting": reported,
        "replicas_by_pool": dict(sorted(by_pool.items())),
        "usd_per_hour": round(usd, 4),
        "preemptions": preemptions,
        "gpu_failures": failures,
    }
