"""Routing filters: which replicas may take a request at all. The ``FILTERS`` registry.

A filter takes the decision's ``RouteContext`` and the candidates left by the filters before
it, and keeps some. When it keeps none, the request waits and the filter's ``reason_code``
says why (``no_ready_replica``, ``all_busy``, ``version_busy``...). ``routable`` and
``free_slot`` run first in every composition (the gateway's queue relies on them);
``version_weight`` sends each request to one version in proportion to the rollout's weights,
sticky by session key when there is one. Adding a filter is one entry in ``FILTERS``. Pure: no
clock, no IO, no state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

from shipit.core.fleet import ReplicaRecord
from shipit.policy.routing.base import RouteContext, routable, with_free_slot


class Filtered(NamedTuple):
    """What a filter kept; when it kept nothing, why (the decision's code and sentence).
    ``note`` is a clause added to the decision's reason when it kept some. Internal, never
    logged; a tuple because every filter makes one on every decision."""

    kept: tuple[ReplicaRecord, ...]
    reason_code: str = ""
    reason: str = ""
    note: str = ""


Filter = Callable[[RouteContext, tuple[ReplicaRecord, ...]], Filtered]


def routable_filter(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> Filtered:
    # First in the chain, it sees the snapshot's replicas, whose routable ones are ``ready``.
    same = candidates is ctx.snapshot.replicas
    kept = ctx.ready if same else routable(candidates, ctx.snapshot.now_s)
    if kept:
        return Filtered(kept)
    return Filtered((), "no_ready_replica", f"none of {len(candidates)} replicas is ready")


def free_slot_filter(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> Filtered:
    kept = with_free_slot(candidates)
    if kept:
        return Filtered(kept)
    return Filtered(
        (),
        "all_busy",
        f"all {len(candidates)} ready replicas are at their concurrency target",
    )


def unit_interval(key: str) -> float:
    """A stable point in [0, 1) for ``key`` (the same on every gateway and in the simulator)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"shipit-ver").digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_version(weights: dict[str, float], versions: set[str], key: str) -> str | None:
    """The version ``key`` falls in, among ``versions`` with a positive weight, each taking a
    share of [0, 1) proportional to its weight (in version order, so a key stays put while
    the weights hold)."""
    eligible = sorted(v for v in versions if weights.get(v, 0.0) > 0)
    if not eligible:
        return None
    total = sum(weights[v] for v in eligible)
    point = unit_interval(key) * total
    for v in eligible:
        point -= weights[v]
        if point < 0:
            return v
    return eligible[-1]


def version_weight_filter(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> Filtered:
    if not ctx.snapshot.version_weights:
        return Filtered(candidates)
    weights = dict(ctx.snapshot.version_weights)
    request = ctx.request
    key = request.session_key or request.request_id
    # The share is over versions with a ready replica, busy or not: a session keeps its
    # version while that version's replicas are busy, and waits for one of them.
    version = choose_version(weights, {r.version for r in ctx.ready}, key)
    if version is None:
        shares = ", ".join(f"{v}={w:g}" for v, w in sorted(weights.items()))
        return Filtered(
            (), "no_weighted_version", f"no ready replica runs a weighted version ({shares})"
        )
    kept = tuple(r for r in candidates if r.version == version)
    how = "sticky by session" if request.session_key else "by request"
    if not kept:
        return Filtered(
            (), "version_busy", f"every ready replica of version {version} ({how}) is busy"
        )
    return Filtered(kept, note=f"version {version} (weight {weights[version]:g}, {how})")


FILTERS: dict[str, Filter] = {
    "routable": routable_filter,
    "free_slot": free_slot_filter,
    "version_weight": version_weight_filter,
}
# Every composition starts with these, whether listed or not.
REQUIRED_FILTERS: tuple[str, ...] = ("routable", "free_slot")
