"""The ``slo:`` and ``alerts:`` blocks of ``shipit.yaml``: defaults, validation, errors that
name the field."""

from __future__ import annotations

import pytest

from shipit.config.gateway import ConfigError, parse_config


def test_defaults_have_no_slo_and_alerts_on_without_delivery() -> None:
    cfg = parse_config({})
    assert cfg.deployments[0].slo is None
    assert cfg.alerts.enabled and cfg.alerts.sample_interval_s == 10.0
    assert cfg.alerts.webhook_url is None and cfg.alerts.alertmanager_url is None


def test_slo_and_alerts_blocks_parse() -> None:
    cfg = parse_config(
        {
            "alerts": {"sample_interval_s": 2, "alertmanager_url": "http://127.0.0.1:9093"},
            "deployments": [{"name": "chat", "slo": {"ttft_p99_ms": 500, "tpot_p99_ms": 50}}],
        }
    )
    slo = cfg.deployments[0].slo
    assert slo is not None and slo.ttft_p99_ms == 500 and slo.tpot_p99_ms == 50
    assert cfg.alerts.alertmanager_url == "http://127.0.0.1:9093"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"deployments": [{"slo": {"ttft_p99_ms": 0}}]}, "deployments.0.slo.ttft_p99_ms"),
        ({"deployments": [{"slo": {"ttft_ms": 5}}]}, "deployments.0.slo.ttft_ms"),
        ({"alerts": {"webhook_url": "ftp://x"}}, "alerts.webhook_url"),
        ({"alerts": {"sample_interval_s": -1}}, "alerts.sample_interval_s"),
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.field == field
