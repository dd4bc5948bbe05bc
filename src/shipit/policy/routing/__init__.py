"""Routing policies: pure decisions over ``RequestView`` and ``ReplicaRecord``s.

``build_policy`` makes a policy from its name and the deployment's ``RoutingConfig``; each
policy composes the shared filters → weighted scorers → pick of ``base``. Nothing here reads a
clock, does IO or imports a framework.
"""

from shipit.config.gateway import ROUTING_POLICIES, RoutingConfig
from shipit.policy.routing.base import RouteDecision, RoutingPolicy
from shipit.policy.routing.least_outstanding import LeastOutstanding
from shipit.policy.routing.lora_affinity import LoraAffinity
from shipit.policy.routing.power_of_two import PowerOfTwo
from shipit.policy.routing.prefix_cache import PrefixCache, PrefixIndex, text_block_hashes
from shipit.policy.routing.round_robin import RoundRobin
from shipit.policy.routing.session_affinity import SessionAffinity


def build_policy(name: str, config: RoutingConfig) -> RoutingPolicy:
    """A fresh policy of ``name``; unknown names say which exist."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_outstanding":
        return LeastOutstanding()
    if name == "power_of_two":
        return PowerOfTwo(seed=config.seed)
    if name == "prefix_cache":
        return PrefixCache(config.prefix_cache)
    if name == "lora_affinity":
        return LoraAffinity(config.lora_affinity)
    if name == "session_affinity":
        return SessionAffinity(config.session_affinity)
    raise ValueError(
        f"unknown routing policy {name!r}; choose one of {', '.join(ROUTING_POLICIES)}"
    )


__all__ = [
    "ROUTING_POLICIES",
    "LeastOutstanding",
    "LoraAffinity",
    "PowerOfTwo",
    "PrefixCache",
    "PrefixIndex",
    "RoundRobin",
    "RouteDecision",
    "RoutingPolicy",
    "SessionAffinity",
    "build_policy",
    "text_block_hashes",
]
