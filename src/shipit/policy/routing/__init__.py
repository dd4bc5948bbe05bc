"""Routing: pure decisions over a ``RequestView`` and the replicas' ``ReplicaRecord``s.

A routing policy is a composition, per deployment in ``shipit.yaml``: filters (``FILTERS``)
→ weighted scorers (``SCORERS``) → a picker (``PICKERS``). Today's policy names are presets
(``PRESETS``) of the same parts; ``custom`` composes the deployment's own. ``plan_for`` builds a
``RoutePlan``; ``decide(plan, snapshot, state) -> (RouteDecision, RoutingState)`` is pure;
``observe`` feeds the driver-owned ``PrefixIndex`` after a decision was applied. Nothing here
reads a clock, does IO or imports a framework.
"""

from shipit.policy.routing.affinity import prompt_tokens, slot_wait_s, uncached_tokens
from shipit.policy.routing.base import (
    Pick,
    ReplicaPace,
    RouteContext,
    RouteDecision,
    RouteSnapshot,
    RoutingState,
    SessionRing,
)
from shipit.policy.routing.filters import FILTERS, Filtered
from shipit.policy.routing.pace import PaceBook, computed_tokens
from shipit.policy.routing.pickers import PICKERS
from shipit.policy.routing.pipeline import (
    PRESETS,
    STANDARD_FILTERS,
    RoutePlan,
    decide,
    observe,
    plan_for,
    uses,
)
from shipit.policy.routing.prefix_cache import (
    PrefixIndex,
    apply_events,
    prefix_hits,
    tail_blocks,
    text_block_hashes,
)
from shipit.policy.routing.scorers import SCORERS

__all__ = [
    "FILTERS",
    "PICKERS",
    "PRESETS",
    "SCORERS",
    "STANDARD_FILTERS",
    "Filtered",
    "PaceBook",
    "Pick",
    "PrefixIndex",
    "ReplicaPace",
    "RouteContext",
    "RouteDecision",
    "RoutePlan",
    "RouteSnapshot",
    "RoutingState",
    "SessionRing",
    "apply_events",
    "computed_tokens",
    "decide",
    "observe",
    "plan_for",
    "prefix_hits",
    "prompt_tokens",
    "slot_wait_s",
    "tail_blocks",
    "text_block_hashes",
    "uncached_tokens",
    "uses",
]
