"""``shipit.yaml``: defaults, file loading, flag overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.config.gateway import ConfigError, apply_overrides, load_config, parse_config


def test_defaults_are_two_replicas_of_the_default_model() -> None:
    cfg = load_config(None)
    (d,) = cfg.deployments
    assert (d.replicas, d.model, d.routing.policy) == (
        2,
        "smollm2-135m-instruct",
        "least_outstanding",
    )


def test_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "shipit.yaml"
    path.write_text(
        "gateway: {port: 9000}\n"
        "deployments:\n"
        "  - name: chat\n    replicas: 3\n    routing: {policy: prefix_cache}\n"
    )
    cfg = load_config(path)
    assert cfg.gateway.port == 9000 and cfg.deployments[0].routing.policy == "prefix_cache"
    cfg = apply_overrides(cfg, port=0, deployment={"replicas": 1, "routing.policy": "round_robin"})
    d = cfg.deployments[0]
    assert (cfg.gateway.port, d.replicas, d.routing.policy, d.name) == (0, 1, "round_robin", "chat")


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"deployments": [{"routing": {"policy": "random"}}]},
            "deployments.0.routing.policy",
            "prefix_cache",
        ),
        ({"deployments": [{"replica": 2}]}, "deployments.0.replica", "unknown field"),
        (
            {"deployments": [{"queueing": {"max_queue": -1}}]},
            "deployments.0.queueing.max_queue",
            "greater than or equal to 0",
        ),
        ({"deployments": [{"name": "a"}, {"name": "a"}]}, "deployments", "unique"),
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.field == field and words in info.value.message


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    ("deployment", "names"),
    [
        (
            {"queueing": {"concurrency_target": 3}},
            ("queueing.concurrency_target", "max_concurrency"),
        ),
        (
            {"autoscaling": {"concurrency_target": 3}},
            ("autoscaling.concurrency_target", "target_concurrency"),
        ),
    ],
)
def test_the_old_two_meaning_concurrency_target_names_its_replacement(
    deployment: dict[str, object], names: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"deployments": [deployment]})
    assert all(n in str(exc.value) for n in names)


def test_a_custom_routing_composition_loads(tmp_path: Path) -> None:
    path = tmp_path / "shipit.yaml"
    path.write_text(
        "deployments:\n"
        "  - routing:\n"
        "      policy: custom\n"
        "      filters: [routable, free_slot, version_weight]\n"
        "      scorers: [{name: prefix_cache, weight: 2.0}, {name: load}]\n"
        "      picker: power_of_two\n"
        "      version_weights: {v1: 90, v2: 10}\n"
    )
    routing = load_config(path).deployments[0].routing
    assert routing.policy == "custom" and routing.picker == "power_of_two"
    assert [(s.name, s.weight) for s in routing.scorers or ()] == [
        ("prefix_cache", 2.0),
        ("load", 1.0),
    ]
    assert routing.version_weights == {"v1": 90, "v2": 10}


def test_a_preset_flag_over_a_custom_file_says_what_to_drop() -> None:
    cfg = parse_config({"deployments": [{"routing": {"policy": "custom", "picker": "best"}}]})
    with pytest.raises(ConfigError, match=r"routing\.picker is read only with policy: custom"):
        apply_overrides(cfg, deployment={"routing.policy": "prefix_cache"})
