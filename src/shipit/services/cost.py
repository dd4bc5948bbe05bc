"""Estimated spend of a deployment from the capacity planner's price data.

Owns the price of one replica-hour (the cheapest on-demand quote in ``capacity/data/prices.yaml``
for a simulated replica's GPU, times its tensor-parallel degree) and the arithmetic from spend
and throughput to dollars per million output tokens. Replicas of the embedded CPU engine and
external endpoints have no price here: they cost 0 in these figures (the docs say so). It must
not publish metrics (``services.alerts`` does, once per sampling tick).
"""

from __future__ import annotations

from collections.abc import Iterable

from shipit.capacity.catalog import Catalog, load_catalog
from shipit.core.errors import ShipitError


def _gpu_and_tp(simulate: str) -> tuple[str, int]:
    """``GPU:MODEL[:tpN]`` → (GPU name, TP degree), the ``--simulate`` syntax."""
    parts = [p.strip() for p in simulate.split(":")]
    tp = 1
    if len(parts) == 3 and parts[2].lower().startswith("tp") and parts[2][2:].isdigit():
        tp = int(parts[2][2:])
    return parts[0], tp


def replica_usd_per_hour(simulate: str | None, catalog: Catalog | None = None) -> float:
    """One replica-hour: cheapest on-demand GPU price x TP for a simulated GPU, else 0."""
    if not simulate:
        return 0.0
    catalog = catalog or load_catalog()
    name, tp = _gpu_and_tp(simulate)
    try:
        gpu = catalog.gpu(name)
    except ShipitError:
        return 0.0
    quotes = catalog.prices_for(gpu.id)
    if not quotes:
        return 0.0
    return min(q.usd_per_gpu_hour for q in quotes) * tp


def deployment_usd_per_hour(usd_per_replica_hour: float, replica_states: Iterable[str]) -> float:
    """Spend of the replicas that hold an accelerator (every state but ``stopped``)."""
    return usd_per_replica_hour * sum(1 for s in replica_states if s != "stopped")


def usd_per_million_tokens(usd_per_hour: float, output_tokens_per_s: float) -> float | None:
    """Spend per million output tokens at this throughput; ``None`` when nothing was served."""
    if output_tokens_per_s <= 0:
        return None
    return usd_per_hour / (output_tokens_per_s * 3600.0) * 1e6
