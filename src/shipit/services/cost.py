"""Estimated spend of a deployment from the capacity planner's price data.

Owns the price of one replica-hour of a live deployment (the cheapest on-demand catalog quote
for a simulated replica's GPU, times its tensor-parallel degree, read through
``capacity.pricing``) and the live figures built on it. Replicas of the embedded CPU engine and
external endpoints have no price here: they cost 0 in these figures (the docs say so). It must
not publish metrics (``services.alerts`` does, once per sampling tick) or price anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from shipit.capacity import pricing
from shipit.capacity.catalog import Catalog, load_catalog
from shipit.capacity.deployment import parse_gpu_model
from shipit.core.errors import ShipitError


def replica_usd_per_hour(simulate: str | None, catalog: Catalog | None = None) -> float:
    """One replica-hour: cheapest on-demand GPU price x TP for a simulated GPU, else 0."""
    if not simulate:
        return 0.0
    catalog = catalog or load_catalog()
    try:
        names = parse_gpu_model(simulate)
        gpu = catalog.gpu(names.gpu)
    except ShipitError:
        return 0.0
    quote = pricing.cheapest_quote(catalog, gpu.id)
    return quote.usd_per_gpu_hour * names.tp if quote is not None else 0.0


def deployment_usd_per_hour(usd_per_replica_hour: float, replica_states: Iterable[str]) -> float:
    """Spend of the replicas that hold an accelerator (every state but ``stopped``)."""
    return usd_per_replica_hour * sum(1 for s in replica_states if s != "stopped")


def usd_per_million_tokens(usd_per_hour: float, output_tokens_per_s: float) -> float | None:
    """Spend per million output tokens at this throughput; ``None`` when nothing was served."""
    if output_tokens_per_s <= 0:
        return None
    return pricing.usd_per_million_tokens(usd_per_hour, output_tokens_per_s)
