"""``--gateway-workers``: the flag beats ``gateway.workers``, caps are split between workers, a
worker serves the first one's replicas as external URLs, and fleets whose replicas come and go
are refused with more than one worker."""

from __future__ import annotations

import json

import pytest

from shipit.cli.up_workers import WORKER_ENV, configure_workers
from shipit.config.gateway import ConfigError, parse_config


def _cfg(**deployment: object) -> dict[str, object]:
    return {"deployments": [{"name": "d", "model": "m", "replicas": 2, **deployment}]}


def test_one_worker_changes_nothing() -> None:
    cfg = parse_config(_cfg(queueing={"max_concurrency": 8}))
    out, spec = configure_workers(cfg, None, {})
    assert spec is None
    assert out.gateway.workers == 1
    assert out.deployments[0].queueing.max_concurrency == 8


def test_the_flag_sets_workers_and_splits_the_cap() -> None:
    cfg = parse_config(_cfg(queueing={"max_concurrency": 8}))
    out, _ = configure_workers(cfg, 3, {})
    assert out.gateway.workers == 3
    assert out.deployments[0].queueing.max_concurrency == 2
    assert out.deployments[0].replicas == 2  # the first worker still starts the replicas


def test_a_cap_below_the_worker_count_stays_one() -> None:
    cfg = parse_config({"gateway": {"workers": 4}, **_cfg(queueing={"max_concurrency": 2})})
    out, _ = configure_workers(cfg, None, {})
    assert out.deployments[0].queueing.max_concurrency == 1


def test_a_worker_serves_the_first_ones_replicas() -> None:
    cfg = parse_config(_cfg())
    env = {WORKER_ENV: json.dumps({"index": 1, "urls": {"d": ["http://127.0.0.1:9/v1"]}})}
    out, spec = configure_workers(cfg, 2, env)
    assert spec is not None and spec.index == 1
    assert out.deployments[0].replicas == 0
    assert out.deployments[0].replica_urls == ["http://127.0.0.1:9/v1"]


def test_autoscaling_is_refused_with_workers() -> None:
    cfg = parse_config(_cfg(autoscaling={"min_replicas": 1, "max_replicas": 3}))
    with pytest.raises(ConfigError, match="autoscaled") as err:
        configure_workers(cfg, 2, {})
    assert err.value.field == "gateway.workers"
    configure_workers(cfg, 1, {})  # one worker: fine


def test_zero_workers_is_refused() -> None:
    with pytest.raises(ConfigError):
        configure_workers(parse_config(_cfg()), 0, {})
