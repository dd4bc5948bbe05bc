"""The pure parts of the Ray backend: what a replica asks of its node, which node it goes to,
the ``shipit replica`` arguments it runs with, and the errors a user can hit.

``demand`` turns a deployment's ``ray_backend:`` settings into Ray resources (a capacity pool is
the custom resource ``pool:<name>``, one unit per replica). ``choose_node`` spreads a
deployment's replicas: of the alive nodes whose totals, less what shipit's replicas there hold,
cover one more replica, the one that runs the fewest of the deployment's replicas (then the
lowest node id, so the choice is reproducible); with no such node it says why and lets Ray's
scheduler hold the replica (an autoscaling cluster may add a node). No Ray, clock, socket or
process here: ``backends.ray`` reads the cluster and applies the choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shipit.backends.base import ReplicaSpec
from shipit.config.ray_backend import RayBackendConfig

POOL_PREFIX = "pool:"
INSTALL_HINT = "pip install 'shipit[ray]'"


class RayBackendError(Exception):
    """A Ray backend failure a user can act on; ``message`` says what and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def pool_resource(pool: str) -> str:
    """The custom resource that marks a node as part of capacity pool ``pool``."""
    return f"{POOL_PREFIX}{pool}"


def demand(cfg: RayBackendConfig) -> dict[str, float]:
    """Ray resources one replica reserves (zero amounts left out: Ray ignores them)."""
    out: dict[str, float] = {"CPU": cfg.num_cpus, "GPU": cfg.num_gpus}
    if cfg.memory_bytes is not None:
        out["memory"] = float(cfg.memory_bytes)
    if cfg.pool is not None:
        out[pool_resource(cfg.pool)] = 1.0
    out.update(cfg.resources)
    return {name: amount for name, amount in out.items() if amount > 0}


@dataclass(frozen=True, slots=True)
class NodeView:
    """One Ray node as the placement reads it: its id, whether it is alive, its total resources."""

    node_id: str
    alive: bool
    resources: tuple[tuple[str, float], ...]
    address: str = ""

    def total(self, name: str) -> float:
        return dict(self.resources).get(name, 0.0)


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str | None  # None: no node fits now; Ray's scheduler holds the replica
    reason: str


def node_views(raw: Iterable[Mapping[str, object]]) -> tuple[NodeView, ...]:
    """``ray.nodes()`` records -> ``NodeView``s (unknown fields ignored)."""
    out = []
    for n in raw:
        res = n.get("Resources") or {}
        assert isinstance(res, Mapping)
        resources = tuple(sorted((str(k), float(v)) for k, v in res.items()))
        addr = n.get("NodeManagerAddress") or ""
        out.append(NodeView(str(n.get("NodeID", "")), bool(n.get("Alive")), resources, str(addr)))
    return tuple(out)


def fits(node: NodeView, want: Mapping[str, float], used: Mapping[str, float]) -> bool:
    """Whether ``node``'s totals, less what shipit's replicas there hold (``used``), cover
    ``want``. Other work on the node is Ray's to queue behind."""
    return node.alive and all(node.total(k) - used.get(k, 0.0) >= v for k, v in want.items())


def _fmt(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if not k.startswith("node:")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def choose_node(
    nodes: Iterable[NodeView],
    want: Mapping[str, float],
    ours: Mapping[str, int],
    used: Mapping[str, Mapping[str, float]] | None = None,
    avoid: frozenset[str] = frozenset(),
) -> Placement:
    """The node for one more replica asking ``want``: ``ours`` counts the deployment's replicas
    per node id, ``used`` sums the resources all of shipit's replicas hold per node id. Nodes in
    ``avoid`` (where an actor just died: Ray may not have declared the node dead yet) are taken
    only when no other node fits."""
    used = used or {}
    alive = [n for n in nodes if n.alive]
    fitting = [n for n in alive if fits(n, want, used.get(n.node_id, {}))]
    fitting = [n for n in fitting if n.node_id not in avoid] or fitting
    if not fitting:
        have = "; ".join(f"{n.address or n.node_id[:8]} {_fmt(dict(n.resources))}" for n in alive)
        return Placement(
            None,
            f"no alive node has room for another replica needing {_fmt(want)} "
            f"(nodes: {have or 'none'})",
        )
    best = min(fitting, key=lambda n: (ours.get(n.node_id, 0), n.node_id))
    where = best.address or best.node_id[:8]
    return Placement(
        best.node_id,
        f"node {where} ({best.node_id[:8]}) runs {ours.get(best.node_id, 0)} of the "
        f"deployment's replicas, the fewest of {len(fitting)} nodes with room for {_fmt(want)}",
    )


def replica_args(spec: ReplicaSpec) -> list[str]:
    """``shipit replica`` flags for ``spec`` (the node adds ``--host`` and ``--port``)."""
    args = ["--model", spec.model, "--drain-timeout-s", str(spec.drain_timeout_s)]
    if spec.simulate:
        args += ["--simulate", spec.simulate]
    return args + list(spec.extra_args)


def not_installed() -> RayBackendError:
    return RayBackendError(
        f"backend: ray needs Ray, which is not installed here: {INSTALL_HINT} "
        "(the same version as the cluster's), or choose another backend"
    )


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` of a GCS address; None for 'auto', ray:// and other forms Ray resolves."""
    if address == "auto" or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayBackendError(
            f"Ray address {address!r}: expected host:port of the head node (e.g. "
            "127.0.0.1:6379), 'auto', or ray://host:10001"
        )
    return host.strip("[]"), int(port)


def unreachable(address: str, detail: str) -> RayBackendError:
    return RayBackendError(
        f"cannot reach the Ray cluster at {address} ({detail}): is its head node running? "
        "Start one with `ray start --head --port 6379`, give the head's address with "
        "--ray-address or ray_backend.address, or leave the address unset to run a single-node "
        "Ray inside shipit up"
    )


def placement_timed_out(
    deployment: str, want: Mapping[str, float], waited_s: float, why: str
) -> RayBackendError:
    return RayBackendError(
        f"deployment {deployment!r}: no Ray node took a replica needing {_fmt(want)} within "
        f"{waited_s:g}s ({why}); add a node with those resources (ray start --resources ...), "
        "lower num_cpus / num_gpus / resources in ray_backend, or raise placement_timeout_s"
    )
