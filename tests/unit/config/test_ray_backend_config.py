"""``backend: ray`` and its ``ray_backend:`` block in ``shipit.yaml``: parsed, and refused with
the field, the value and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from shipit.config.gateway import ConfigError, parse_config


def _cfg(ray_backend: dict[str, Any]) -> dict[str, Any]:
    return {"deployments": [{"name": "d", "backend": "ray", "ray_backend": ray_backend}]}


def test_a_ray_deployment_parses() -> None:
    cfg = parse_config(
        _cfg({"address": "10.0.0.2:6379", "pool": "spot", "num_gpus": 1, "resources": {"A": 2}}),
        source="test",
    )
    d = cfg.deployments[0]
    assert d.backend == "ray"
    assert d.ray_backend.address == "10.0.0.2:6379" and d.ray_backend.pool == "spot"
    assert d.ray_backend.num_gpus == 1 and d.ray_backend.resources == {"A": 2}


def test_defaults_need_no_block() -> None:
    d = parse_config({"deployments": [{"backend": "ray"}]}, source="test").deployments[0]
    assert d.ray_backend.address is None and d.ray_backend.num_cpus == 1.0
    assert d.ray_backend.spread is True


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"resources": {"CPU": 2}}, ["resources.CPU", "num_cpus"]),
        ({"resources": {"GPU": 1}}, ["resources.GPU", "num_gpus"]),
        ({"pool": "my pool"}, ["'my pool'", "pool:<name>"]),
        ({"num_gpus": -1}, ["num_gpus"]),
        ({"adress": "x"}, ["adress"]),
    ],
)
def test_bad_settings_name_the_field(block: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_cfg(block), source="test")
    for word in words:
        assert word in exc.value.message, exc.value.message
