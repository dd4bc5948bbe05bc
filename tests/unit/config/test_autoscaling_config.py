"""The ``autoscaling:`` block of a deployment: defaults, the flags over the file, how
``replicas`` and autoscaling interact, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.cli.up import build_config
from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import ConfigError, parse_config

FLAGS_OFF: dict[str, object] = {
    "port": None,
    "host": None,
    "replicas": None,
    "routing": None,
    "model": None,
    "simulate": None,
    "replica_url": [],
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shipit.yaml"
    path.write_text(text)
    return path


def test_no_block_is_a_fixed_fleet() -> None:
    (d,) = parse_config({"deployments": [{"replicas": 3}]}).deployments
    assert d.autoscaling is None and d.initial_replicas == 3


def test_block_defaults_and_min_replicas_start() -> None:
    (d,) = parse_config({"deployments": [{"autoscaling": {"min_replicas": 0}}]}).deployments
    assert d.autoscaling is not None
    a = d.autoscaling
    assert (a.max_replicas, a.autoscaling_window_s, a.panic_window_s) == (4, 60.0, 6.0)
    assert (a.scale_down_delay_s, a.target_concurrency, a.tick_interval_s) == (120.0, 8.0, 1.0)
    assert d.initial_replicas == 0


def test_panic_window_follows_the_stable_window_unless_given() -> None:
    assert AutoscalingConfig(autoscaling_window_s=10).panic_window_s == 1.0
    assert AutoscalingConfig(autoscaling_window_s=10, panic_window_s=4).panic_window_s == 4


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "deployments:\n  - name: chat\n    autoscaling: {min_replicas: 1, max_replicas: 4,"
        " autoscaling_window_s: 30}\n",
    )
    flags = {
        "min_replicas": 0,
        "max_replicas": 3,
        "autoscaling_window_s": 5.0,
        "scale_down_delay_s": 2.0,
        "target_concurrency": 2.0,
    }
    cfg = build_config(path, **FLAGS_OFF, autoscaling=flags)  # type: ignore[arg-type]
    a = cfg.deployments[0].autoscaling
    assert a is not None
    assert (a.min_replicas, a.max_replicas, a.autoscaling_window_s) == (0, 3, 5.0)
    assert (a.scale_down_delay_s, a.target_concurrency, a.panic_window_s) == (2.0, 2.0, 0.5)


def test_an_autoscaling_flag_alone_turns_autoscaling_on() -> None:
    cfg = build_config(None, **FLAGS_OFF, autoscaling={"max_replicas": 5})  # type: ignore[arg-type]
    d = cfg.deployments[0]
    assert d.autoscaling is not None and d.autoscaling.max_replicas == 5
    assert d.initial_replicas == 1  # min_replicas' default


def test_replicas_sets_the_initial_count_within_bounds() -> None:
    flags = {**FLAGS_OFF, "replicas": 2}
    cfg = build_config(None, **flags, autoscaling={"min_replicas": 0})  # type: ignore[arg-type]
    assert cfg.deployments[0].initial_replicas == 2


def test_replicas_outside_the_bounds_is_an_error_that_says_what_to_do() -> None:
    flags = {**FLAGS_OFF, "replicas": 5}
    with pytest.raises(ConfigError) as exc:
        build_config(None, **flags, autoscaling={"max_replicas": 3})  # type: ignore[arg-type]
    msg = exc.value.message
    assert "replicas (5)" in msg and "max_replicas (3)" in msg and "--replicas" in msg


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) must be <= max_replicas"),
        ({"max_replicas": 0}, "autoscaling.max_replicas"),
        ({"autoscaling_window_s": 10, "panic_window_s": 20}, "panic_window_s (20.0)"),
        ({"min_replica": 1}, "unknown field"),
    ],
)
def test_bad_blocks_name_the_field(block: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"deployments": [{"autoscaling": block}]})
    assert words in exc.value.message


def test_one_startup_timeout_the_deployments_unless_the_block_sets_its_own() -> None:
    from shipit.policy.autoscaling.settings import effective_config, lifecycle_config

    (fixed, scaled, own) = parse_config(
        {
            "deployments": [
                {"name": "a", "startup_timeout_s": 900},
                {"name": "b", "startup_timeout_s": 900, "autoscaling": {"max_replicas": 2}},
                {"name": "c", "autoscaling": {"max_replicas": 2, "startup_timeout_s": 60}},
            ]
        }
    ).deployments
    for d, want in ((fixed, 900), (scaled, 900), (own, 60)):
        config = effective_config(d)
        assert config is not None and config.startup_timeout_s == want, d.name
        assert lifecycle_config(d).startup_timeout_s == want, d.name
    default = parse_config({"deployments": [{"autoscaling": {"max_replicas": 2}}]}).deployments[0]
    config = effective_config(default)
    assert config is not None and config.startup_timeout_s == default.startup_timeout_s == 300
