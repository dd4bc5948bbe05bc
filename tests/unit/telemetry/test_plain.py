"""Plain counters and histograms: the same exposition as prometheus_client's, byte for byte
(``_created`` timestamps aside)."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shipit.telemetry.plain import PlainCounter, PlainHistogram

BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5)


def _text(registry: CollectorRegistry) -> str:
    # _created carries each child's creation time: equal in shape, not in value.
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def _both() -> tuple[CollectorRegistry, CollectorRegistry, tuple[object, ...], tuple[object, ...]]:
    ref, plain = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    theirs = (
        Counter("x_requests", "Requests.", ["deployment", "status"], registry=ref),
        Histogram("x_ttft_seconds", "TTFT.", ["deployment"], buckets=BUCKETS, registry=ref),
    )
    ours = (
        PlainCounter("x_requests", "Requests.", ["deployment", "status"], plain),
        PlainHistogram("x_ttft_seconds", "TTFT.", ["deployment"], plain, buckets=BUCKETS),
    )
    return ref, plain, theirs, ours


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.01, 0.010001, 0.1, 0.3, 1.0, 2.5, 2.6, 100.0],
        [math.inf],
        [],
        [0.05] * 7,
    ],
)
def test_the_same_exposition_as_prometheus_client(values: list[float]) -> None:
    ref, plain, (c_ref, h_ref), (c_ours, h_ours) = _both()
    for v in values:
        for h in (h_ref, h_ours):
            h.labels("chat").observe(v)  # type: ignore[attr-defined]
            h.labels(deployment="code").observe(v * 2)  # type: ignore[attr-defined]
        for c in (c_ref, c_ours):
            c.labels("chat", 200).inc()  # type: ignore[attr-defined]
            c.labels(deployment="chat", status="500").inc(3)  # type: ignore[attr-defined]
    assert _text(plain) == _text(ref)
    assert plain.get_sample_value("x_requests_total", {"deployment": "chat", "status": "200"}) == (
        len(values) or None
    )


def test_a_value_lands_in_the_first_bucket_at_or_above_it() -> None:
    _, plain, _, (_, h) = _both()
    child = h.labels("d")  # type: ignore[attr-defined]
    for v in (0.01, 0.0100001, 2.5, 3.0):
        child.observe(v)
    le = {
        b: plain.get_sample_value("x_ttft_seconds_bucket", {"deployment": "d", "le": b})
        for b in ("0.01", "0.1", "2.5", "+Inf")
    }
    assert le == {"0.01": 1.0, "0.1": 2.0, "2.5": 3.0, "+Inf": 4.0}
    assert plain.get_sample_value("x_ttft_seconds_sum", {"deployment": "d"}) == pytest.approx(
        5.5200001
    )


def test_wrong_labels_and_negative_increments_are_refused() -> None:
    _, _, _, (c, h) = _both()
    with pytest.raises(ValueError, match="expected labels"):
        c.labels("only-one")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="expected labels"):
        h.labels(model="m")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="non-negative"):
        c.labels("d", "200").inc(-1)  # type: ignore[attr-defined]


def test_a_second_family_of_the_same_name_is_refused() -> None:
    registry = CollectorRegistry(auto_describe=False)
    PlainCounter("x_requests", "Requests.", ["d"], registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("x_requests", "Requests.", ["d"], registry=registry)
