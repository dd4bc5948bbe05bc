"""Prices: which catalog quote a GPU-hour costs, and dollars per million tokens.

Owns the two pricing facts every cost figure in shipit is built from, once: the price of a
GPU-hour (the cheapest on-demand quote in the catalog for a GPU, optionally at one provider,
unless the user gives a price) and the arithmetic from spend and throughput to dollars per
million tokens. ``cost`` (token cost, procurement), ``recommend``, ``shipit plan cost`` and
the live cost gauges all call these. Pure: no IO, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.capacity.catalog import Catalog
from shipit.capacity.records import PriceQuote, Provider
from shipit.core.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class GpuHourPrice:
    """The price used for one GPU-hour, the provider it is for, and where it came from."""

    usd_per_gpu_hour: float
    provider: Provider | None
    origin: str  # "given", or "<provider> <region> <as_of>" of the quote


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """Dollars per million tokens when ``usd_per_hour`` buys ``tokens_per_s`` tokens."""
    if tokens_per_s <= 0:
        raise InvalidRequestError(
            f"tokens_per_s={tokens_per_s} must be > 0 to price a token", field="tokens_per_s"
        )
    return usd_per_hour / (tokens_per_s * 3600.0) * 1e6


def cheapest_quote(
    catalog: Catalog, gpu_id: str, providers: tuple[str, ...] = ()
) -> PriceQuote | None:
    """The lowest on-demand quote for ``gpu_id`` (at ``providers`` if given); None if none."""
    quotes = catalog.prices_for(gpu_id, providers)
    return min(quotes, key=lambda q: q.usd_per_gpu_hour) if quotes else None


def gpu_hour_price(
    catalog: Catalog,
    gpu_id: str,
    *,
    provider: str | None = None,
    usd_per_gpu_hour: float | None = None,
) -> GpuHourPrice:
    """``usd_per_gpu_hour`` if given, else the cheapest catalog quote; errors say what to do."""
    if usd_per_gpu_hour is not None:
        return GpuHourPrice(
            usd_per_gpu_hour, catalog.provider(provider) if provider else None, "given"
        )
    quote = cheapest_quote(catalog, gpu_id, (provider,) if provider else ())
    if quote is None:
        known = sorted({q.gpu for q in catalog.prices})
        raise InvalidRequestError(
            f"no catalog price for {gpu_id} at {provider or 'any provider'}; pass "
            f"--usd-per-gpu-hour, or pick a GPU with prices: {', '.join(known)}",
            field="gpu",
        )
    return GpuHourPrice(
        quote.usd_per_gpu_hour,
        catalog.provider(quote.provider),
        f"{quote.provider} {quote.region} {quote.as_of}",
    )
