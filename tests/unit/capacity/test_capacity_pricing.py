"""Prices: the cheapest quote, a given price, and dollars per million tokens."""

from __future__ import annotations

import pytest

from shipit.capacity.catalog import Catalog
from shipit.capacity.pricing import (
    cheapest_quote,
    gpu_hour_price,
    usd_per_million_tokens,
)
from shipit.capacity.records import PriceQuote, Provider
from shipit.core.errors import InvalidRequestError


def _quote(provider: str, gpu: str, usd: float) -> PriceQuote:
    return PriceQuote(provider, "r1", gpu, usd, as_of="2025-01-01", source="test")


def _provider(pid: str) -> Provider:
    return Provider(
        pid, pid.title(), spot_discount=0.5, reserved_1y_discount=0.3, discount_source="t"
    )


CATALOG = Catalog(
    gpus=(),
    models=(),
    providers=(_provider("cheap"), _provider("dear")),
    prices=(
        _quote("dear", "h100", 4.0),
        _quote("cheap", "h100", 2.5),
        _quote("dear", "l4", 0.9),
    ),
)


def test_the_cheapest_quote_wins_within_the_providers_asked() -> None:
    assert cheapest_quote(CATALOG, "h100") == _quote("cheap", "h100", 2.5)
    assert cheapest_quote(CATALOG, "h100", ("dear",)) == _quote("dear", "h100", 4.0)
    assert cheapest_quote(CATALOG, "b200") is None


def test_gpu_hour_price_from_the_catalog_names_its_quote() -> None:
    price = gpu_hour_price(CATALOG, "h100")
    assert (price.usd_per_gpu_hour, price.origin) == (2.5, "cheap r1 2025-01-01")
    assert price.provider is not None and price.provider.id == "cheap"


def test_a_given_price_wins_and_keeps_the_provider_for_its_discounts() -> None:
    price = gpu_hour_price(CATALOG, "b200", provider="dear", usd_per_gpu_hour=7.0)
    assert (price.usd_per_gpu_hour, price.origin) == (7.0, "given")
    assert price.provider is not None and price.provider.reserved_1y_discount == 0.3
    assert gpu_hour_price(CATALOG, "b200", usd_per_gpu_hour=7.0).provider is None


def test_no_price_says_what_to_do() -> None:
    with pytest.raises(InvalidRequestError, match=r"--usd-per-gpu-hour.*h100, l4") as info:
        gpu_hour_price(CATALOG, "b200")
    assert info.value.field == "gpu"


def test_dollars_per_million_tokens() -> None:
    # $3.60 an hour buys 3,600 tokens at 1 token/s: $0.001 a token, $1,000 a million.
    assert usd_per_million_tokens(3.6, 1.0) == pytest.approx(1000.0)
    assert usd_per_million_tokens(3.6, 1000.0) == pytest.approx(1.0)
    with pytest.raises(InvalidRequestError):
        usd_per_million_tokens(3.6, 0.0)
