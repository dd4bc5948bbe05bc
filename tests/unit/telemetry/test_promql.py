"""The reference lexer finds selected metric names and nothing else."""

from __future__ import annotations

import pytest

from shipit.telemetry.promql import selected_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="x"} == 0', {"up"}),
        ("rate(a_total[5m])", {"a_total"}),
        (
            "histogram_quantile(0.9, sum by (le, deployment) "
            '(rate(h_bucket{d=~"$d"}[$__rate_interval])))',
            {"h_bucket"},
        ),
        ("sum(rate(a_total[5m])) / on(x) group_left(y) b > 1e3", {"a_total", "b"}),
        ("deriv(ns:q:sum[10m]) * 60 > 1 and ns:q:sum > 10", {"ns:q:sum"}),
        ('a{l="sum(by)"} offset 5m unless b', {"a", "b"}),
        ("(x or y * 0) / y", {"x", "y"}),
    ],
)
def test_selected_names(expr: str, names: set[str]) -> None:
    assert selected_names(expr) == names
