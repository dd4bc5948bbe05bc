"""Plane failover: which workload planes serve, from probes of their gateways, under a posture.

``decide(config, snapshot, state) -> (FailoverDecision, state)``: the snapshot is one round of
probes (one ok / failed per plane) at ``now_s``; the state is each plane's role and probe
streaks. A plane is out after ``fail_after`` failed probes in a row and back after
``recover_after`` ok ones (one lost probe is not an outage; one good answer is not a recovery).

- ``active-active``: every plane that is up serves; a plane that goes out stops serving and the
  global routing sends its traffic to the others.
- ``active-passive``: the active planes that are up serve; standbys are kept warm and serve
  nothing. When no active plane is up, the standby that is up (first in configuration order) is
  promoted to active. A failed active that recovers comes back as a standby rather than taking
  traffic back (no flapping between two planes that both work); an operator moves it back.

Each change carries its reason code: ``out`` (failed past the threshold), ``back`` (recovered),
``promoted``, ``returned_as_standby``, and the decision lists who serves now. When no plane can
serve, the decision says so (``no_plane``). Pure: no clock, no IO; the front door probes and
applies it, and the fleet simulator drives the same function.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace


class Posture(enum.Enum):
    ACTIVE_ACTIVE = "active-active"
    ACTIVE_PASSIVE = "active-passive"


class PlaneRole(enum.Enum):
    ACTIVE = "active"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class FailoverPolicyConfig:
    posture: Posture = Posture.ACTIVE_ACTIVE
    fail_after: int = 3
    recover_after: int = 2


@dataclass(frozen=True, slots=True)
class PlaneProbe:
    plane: str
    ok: bool
    detail: str = ""  # why a failed probe failed (refused, timed out, 503...)


@dataclass(frozen=True, slots=True)
class FailoverSnapshot:
    now_s: float
    probes: tuple[PlaneProbe, ...]


@dataclass(frozen=True, slots=True)
class PlaneStatus:
    plane: str
    role: PlaneRole
    up: bool = True
    failures: int = 0  # failed probes in a row
    successes: int = 0  # ok probes in a row
    since_s: float = 0.0  # when ``up`` or ``role`` last changed
    promoted: bool = False  # a standby made active because no active plane was up


@dataclass(frozen=True, slots=True)
class FailoverState:
    planes: tuple[PlaneStatus, ...] = ()

    def status(self, plane: str) -> PlaneStatus:
        for p in self.planes:
            if p.plane == plane:
                return p
        raise KeyError(f"no plane {plane!r} in the failover state")

    @property
    def serving(self) -> tuple[str, ...]:
        return tuple(p.plane for p in self.planes if p.up and p.role is PlaneRole.ACTIVE)


@dataclass(frozen=True, slots=True)
class PlaneChange:
    plane: str
    reason_code: str  # out, back, promoted, returned_as_standby
    reason: str


@dataclass(frozen=True, slots=True)
class FailoverDecision:
    serving: tuple[str, ...]  # the planes global routing may send to, in configuration order
    changes: tuple[PlaneChange, ...]
    reason_code: str  # steady, changed, no_plane
    reason: str


def initial_state(planes: Sequence[tuple[str, PlaneRole]]) -> FailoverState:
    """Every plane up (it has not failed a probe yet), in its configured role."""
    return FailoverState(tuple(PlaneStatus(name, role) for name, role in planes))


def _probe(
    config: FailoverPolicyConfig, status: PlaneStatus, probe: PlaneProbe, now_s: float
) -> tuple[PlaneStatus, PlaneChange | None]:
    if probe.ok:
        status = replace(status, failures=0, successes=status.successes + 1)
        if not status.up and status.successes >= config.recover_after:
            status = replace(status, up=True, since_s=now_s)
            return status, PlaneChange(
                status.plane, "back", f"{status.successes} ok probes in a row"
            )
        return status, None
    status = replace(status, failures=status.failures + 1, successes=0)
    if status.up and status.failures >= config.fail_after:
        status = replace(status, up=False, since_s=now_s)
        detail = f": {probe.detail}" if probe.detail else ""
        return status, PlaneChange(
            status.plane, "out", f"{status.failures} failed probes in a row{detail}"
        )
    return status, None


def decide(
    config: FailoverPolicyConfig, snapshot: FailoverSnapshot, state: FailoverState
) -> tuple[FailoverDecision, FailoverState]:
    probes = {p.plane: p for p in snapshot.probes}
    now = snapshot.now_s
    planes: list[PlaneStatus] = []
    changes: list[PlaneChange] = []
    for status in state.planes:
        probe = probes.get(status.plane)
        if probe is not None:
            status, change = _probe(config, status, probe, now)
            if change is not None:
                changes.append(change)
        planes.append(status)

    if config.posture is Posture.ACTIVE_PASSIVE:
        # A failed active that recovers while a promoted standby serves becomes the standby:
        # the promoted plane keeps the traffic (no flapping between two working planes).
        promoted = [p.plane for p in planes if p.promoted and p.up and p.role is PlaneRole.ACTIVE]
        back = {c.plane for c in changes if c.reason_code == "back"}
        for i, p in enumerate(planes):
            if p.plane in back and p.role is PlaneRole.ACTIVE and not p.promoted and promoted:
                planes[i] = replace(p, role=PlaneRole.STANDBY, since_s=now)
                changes.append(
                    PlaneChange(
                        p.plane,
                        "returned_as_standby",
                        f"recovered while promoted {promoted[0]} serves; kept as standby",
                    )
                )
        if not any(p.up and p.role is PlaneRole.ACTIVE for p in planes):
            for i, p in enumerate(planes):
                if p.up and p.role is PlaneRole.STANDBY:
                    planes[i] = replace(p, role=PlaneRole.ACTIVE, since_s=now, promoted=True)
                    down = [q.plane for q in planes if q.role is PlaneRole.ACTIVE and not q.up]
                    changes.append(
                        PlaneChange(
                            p.plane,
                            "promoted",
                            f"no active plane is up ({', '.join(down) or 'none'} out); "
                            f"standby {p.plane} promoted",
                        )
                    )
                    break

    new_state = FailoverState(tuple(planes))
    serving = new_state.serving
    if not serving:
        out = ", ".join(f"{p.plane} ({p.failures} failed)" for p in planes if not p.up)
        decision = FailoverDecision((), tuple(changes), "no_plane", f"no plane can serve: {out}")
    elif changes:
        summary = "; ".join(f"{c.plane} {c.reason_code}: {c.reason}" for c in changes)
        decision = FailoverDecision(serving, tuple(changes), "changed", summary)
    else:
        decision = FailoverDecision(serving, (), "steady", f"serving: {', '.join(serving)}")
    return decision, new_state
