"""``shipit up``'s configuration checks: a deployment that could never serve is refused when
``shipit up`` starts, with what is wrong, the value and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.cli.up import build_config
from shipit.config.gateway import ConfigError

FLAGS_OFF: dict[str, object] = {
    "port": None,
    "host": None,
    "replicas": None,
    "routing": None,
    "model": None,
    "simulate": None,
    "replica_url": [],
}


def test_replicas_0_with_nothing_else_is_refused() -> None:
    flags = {**FLAGS_OFF, "replicas": 0}
    with pytest.raises(ConfigError) as exc:
        build_config(None, **flags)  # type: ignore[arg-type]
    msg = exc.value.message
    assert "replicas is 0" in msg and "'default'" in msg
    assert "--replicas N" in msg and "--replica-url" in msg and "--max-replicas" in msg


def test_the_same_from_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shipit.yaml"
    path.write_text("deployments:\n  - name: chat\n    replicas: 0\n")
    with pytest.raises(ConfigError, match="'chat'"):
        build_config(path, **FLAGS_OFF)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "autoscaling"),
    [
        ({"replicas": 0, "replica_url": ["http://127.0.0.1:9/v1"]}, None),
        ({"replicas": 0}, {"min_replicas": 0, "max_replicas": 2}),
        ({"replica_url": ["http://127.0.0.1:9/v1"]}, None),
    ],
)
def test_zero_local_replicas_is_fine_when_something_can_serve(
    flags: dict[str, object], autoscaling: dict[str, float] | None
) -> None:
    cfg = build_config(None, **{**FLAGS_OFF, **flags}, autoscaling=autoscaling)  # type: ignore[arg-type]
    assert cfg.deployments[0].replicas == 0
