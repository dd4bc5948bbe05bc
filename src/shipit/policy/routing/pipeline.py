"""Routing as configuration: a ``RoutePlan`` composes filters → weighted scorers → a picker, and
``decide`` runs it.

``plan_for(name, config)`` builds the plan of a preset (``PRESETS``: today's policy names, each
a composition of the registries' parts) or of ``custom`` (the deployment's ``filters``,
``scorers`` and ``picker`` from ``shipit.yaml``), and checks every name against the
registries (``FILTERS``, ``SCORERS``, ``PICKERS``), naming the field. ``decide(plan, snapshot,
state) -> (RouteDecision, RoutingState)`` is pure: time, the replicas, the prefix hits and the
version weights come in the ``RouteSnapshot``; the turn, the round-robin cursor, the
power-of-two draw counter and the session ring come in the ``RoutingState`` and go out in a
new one. ``observe`` is the driver's step after applying a decision: it feeds the driver's
``PrefixIndex`` (approximate mode), the one mutable thing routing keeps, which ``decide``
never touches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from shipit.config.gateway import ConfigError, RoutingConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing.base import (
    RouteContext,
    RouteDecision,
    RouteSnapshot,
    RoutingState,
    routable,
)
from shipit.policy.routing.filters import FILTERS, REQUIRED_FILTERS
from shipit.policy.routing.fused import decide_work
from shipit.policy.routing.pickers import PICKER_READS, PICKERS
from shipit.policy.routing.prefix_cache import PrefixIndex, record_routed
from shipit.policy.routing.scorers import SCORERS
from shipit.policy.routing.session_affinity import ring_for

STANDARD_FILTERS: tuple[str, ...] = ("routable", "free_slot", "version_weight")
_LOAD: tuple[tuple[str, float], ...] = (("load", 1.0),)
# Least outstanding work: requests in flight, and the prompt tokens still to compute before
# a new request's first token (seconds of prefill weigh as much as a full replica's load).
_WORK: tuple[tuple[str, float], ...] = (("prefill", 1.0), ("load", 1.0))
# Scorers and pickers that read the driver's paces (``ReplicaPace``): their plans read "paces".
_PACE_READERS = frozenset({"prefill", "prefix_cache"})

# Today's policy names: (filters, weighted scorers, picker).
PRESETS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, float], ...], str]] = {
    "round_robin": (STANDARD_FILTERS, (), "round_robin"),
    "least_outstanding": (STANDARD_FILTERS, _WORK, "best"),
    "power_of_two": (STANDARD_FILTERS, _LOAD, "power_of_two"),
    "prefix_cache": (STANDARD_FILTERS, _LOAD, "prefix_affinity"),
    "lora_affinity": (STANDARD_FILTERS, _LOAD, "lora_affinity"),
    "session_affinity": (STANDARD_FILTERS, _LOAD, "session_affinity"),
}


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """One composed routing policy: the ``config`` argument of ``decide``."""

    name: str  # the preset's name, or "custom"
    config: RoutingConfig
    filters: tuple[str, ...]
    scorers: tuple[tuple[str, float], ...]  # (scorer, weight)
    picker: str
    # The facts it reads, named as the scorers that read them (prefix_cache, lora, session...).
    reads: frozenset[str] = frozenset()
    # Least outstanding work (the standard filters, prefill + load, best): ``decide`` runs it
    # in one pass (``routing.fused``) when no rollout weighs versions.
    fused: bool = False

    def uses(self, part: str) -> bool:
        """Whether a scorer named ``part`` (or the picker that reads what it reads) is in
        the plan: the driver looks prefix hits up only for plans that use ``prefix_cache``,
        and reads its pace book into the snapshot only for plans that use ``paces``."""
        return part in self.reads


def _plan(
    name: str,
    config: RoutingConfig,
    filters: tuple[str, ...],
    scorers: tuple[tuple[str, float], ...],
    picker: str,
) -> RoutePlan:
    reads = {n for n, _ in scorers}
    if picker in PICKER_READS:
        reads.add(PICKER_READS[picker])
    if reads & _PACE_READERS:
        reads.add("paces")
    fused = filters == STANDARD_FILTERS and scorers == _WORK and picker == "best"
    return RoutePlan(name, config, filters, scorers, picker, frozenset(reads), fused)


def _choices(registry: Mapping[str, object]) -> str:
    return ", ".join(registry)


def _custom(config: RoutingConfig) -> RoutePlan:
    filters = list(config.filters) if config.filters is not None else list(STANDARD_FILTERS)
    for i, name in enumerate(filters):
        if name not in FILTERS:
            raise ConfigError(
                f"routing.filters[{i}] is {name!r}, not a filter; choose from {_choices(FILTERS)}",
                field=f"routing.filters.{i}",
            )
    chain = REQUIRED_FILTERS + tuple(dict.fromkeys(f for f in filters if f not in REQUIRED_FILTERS))
    scorers = tuple((s.name, s.weight) for s in config.scorers or ()) or _LOAD
    for i, (name, _) in enumerate(scorers):
        if name not in SCORERS:
            raise ConfigError(
                f"routing.scorers[{i}].name is {name!r}, not a scorer; choose from "
                f"{_choices(SCORERS)}",
                field=f"routing.scorers.{i}.name",
            )
    names = [n for n, _ in scorers]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"routing.scorers names a scorer twice ({', '.join(names)}); give each one "
            "once with the weight you want",
            field="routing.scorers",
        )
    picker = config.picker or "best"
    if picker not in PICKERS:
        raise ConfigError(
            f"routing.picker is {picker!r}, not a picker; choose from {_choices(PICKERS)}",
            field="routing.picker",
        )
    return _plan("custom", config, chain, scorers, picker)


def plan_for(name: str, config: RoutingConfig) -> RoutePlan:
    """The plan of preset ``name``, or of the deployment's ``custom`` composition."""
    if name == "custom":
        return _custom(config)
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(
            f"unknown routing policy {name!r}; choose one of {', '.join(PRESETS)} or custom",
            field="routing.policy",
        )
    filters, scorers, picker = preset
    return _plan(name, config, filters, scorers, picker)


def uses(config: RoutingConfig, part: str, override: str | None = None) -> bool:
    """Whether the policy a request runs (``override`` or ``config.policy``) uses ``part``
    ("prefix_cache", "lora", "session"): the gateway hashes prompts only when it does."""
    return plan_for(override or config.policy, config).uses(part)


_NO_HITS: Mapping[str, int] = MappingProxyType({})


def _totals(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
    if len(ctx.weights) == 1 and ctx.weights[0][1] == 1.0:  # one scorer: its scores as they are
        return SCORERS[ctx.weights[0][0]](ctx, candidates)
    totals = [0.0] * len(candidates)
    for name, weight in ctx.weights:
        for i, s in enumerate(SCORERS[name](ctx, candidates)):
            totals[i] += weight * s
    return tuple(totals)


def decide(
    plan: RoutePlan, snapshot: RouteSnapshot, state: RoutingState
) -> tuple[RouteDecision, RoutingState]:
    """Filters, then weighted scores, then the picker; ``replica_id`` None means "wait"."""
    if plan.fused and not snapshot.version_weights:
        return decide_work(plan.name, plan.config, snapshot, state)
    return decide_composed(plan, snapshot, state)


def decide_composed(
    plan: RoutePlan, snapshot: RouteSnapshot, state: RoutingState
) -> tuple[RouteDecision, RoutingState]:
    """``decide`` through the composed parts, whatever the plan (``decide_work`` is checked
    against it)."""
    ctx = RouteContext(  # positional: built on every decision
        plan.name,
        plan.config,
        snapshot,
        state,
        routable(snapshot.replicas, snapshot.now_s),  # ready
        plan.scorers,  # weights
        dict(snapshot.prefix_hits) if snapshot.prefix_hits else _NO_HITS,  # hits
    )
    candidates = snapshot.replicas
    notes: list[str] = []
    for name in plan.filters:
        out = FILTERS[name](ctx, candidates)
        if not out.kept:
            return RouteDecision(None, plan.name, out.reason_code, out.reason), state
        candidates = out.kept
        if out.note:
            notes.append(out.note)
    request = snapshot.request
    ring = state.ring
    if request.session_key is not None and "session" in plan.reads:
        ids = frozenset(r.replica_id for r in ctx.ready)
        ring = ring_for(ring, ids, plan.config.session_affinity.virtual_nodes)
        if ring is not state.ring:
            ctx = ctx._replace(state=RoutingState(state.turn, state.last_id, state.draws, ring))
    chosen = PICKERS[plan.picker](ctx, candidates, _totals(ctx, candidates))
    if chosen.replica is None:  # the picker chose to wait (for the request's cache holder)
        waits = RouteDecision(
            None,
            plan.name,
            chosen.reason_code,
            chosen.reason,
            prefix_hit_blocks=chosen.prefix_hit_blocks,
            wait_for=chosen.wait_for,
        )
        return waits, state
    load_adapter = chosen.load_adapter
    adapter = request.adapter
    if load_adapter is None and adapter is not None and "lora" in plan.reads:
        load_adapter = None if adapter in chosen.replica.adapters else adapter
    decision = RouteDecision(
        chosen.replica.replica_id,
        plan.name,
        chosen.reason_code,
        "; ".join([chosen.reason, *notes]) if notes else chosen.reason,
        load_adapter,
        chosen.prefix_hit_blocks,
    )
    after = RoutingState(
        state.turn + 1, chosen.replica.replica_id, state.draws + chosen.draws, ring
    )
    return decision, after


def observe(
    plan: RoutePlan, request: RequestView, decision: RouteDecision, index: PrefixIndex
) -> None:
    """The driver's step once ``decision`` was applied: in approximate mode, what was sent to
    a replica is what it now caches. The one mutation routing makes, outside ``decide``."""
    if decision.replica_id is not None and plan.uses("prefix_cache"):
        record_routed(index, plan.config.prefix_cache, request, decision.replica_id)
