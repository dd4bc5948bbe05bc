"""``shipit plan replicas --write-config``: the planner's autoscaling block into ``shipit.yaml``.

Owns turning ``capacity.AutoscalingSettings`` into the keys of a deployment's ``autoscaling:``
section, and updating one deployment of a config file with them: other keys of that section
and every other setting are kept, the result is validated as a whole before anything is
written, and the file is replaced by a rename. YAML comments are not kept (the file is
re-serialised). It decides nothing about the numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from shipit import capacity as cap
from shipit.config.gateway import ConfigError, parse_config


def autoscaling_block(a: cap.AutoscalingSettings) -> dict[str, Any]:
    """The ``autoscaling:`` keys the planner sets (the rest keep their values or defaults)."""
    return {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_concurrency": float(a.target_concurrency_per_replica),
        "scale_up_delay_s": round(a.scale_up_delay_s, 1),
        "scale_down_delay_s": round(a.scale_down_delay_s, 1),
        "cold_start_s": round(a.cold_start_s, 1),
    }


def write_autoscaling(path: Path, deployment: str | None, block: dict[str, Any]) -> str:
    """Set ``block`` in the ``autoscaling:`` of ``deployment`` (the only one when ``None``) in
    the config at ``path`` (created with one deployment if absent); the deployment's name."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read it as YAML ({exc})", field="config") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level", field="config")
        data = loaded or {}
    deployments = data.setdefault("deployments", [{}])
    if not isinstance(deployments, list) or not all(isinstance(d, dict) for d in deployments):
        raise ConfigError(f"{path}: deployments must be a list of mappings", field="deployments")
    names = [str(d.get("name", "default")) for d in deployments]
    if deployment is None:
        if len(deployments) != 1:
            raise ConfigError(
                f"{path} has {len(deployments)} deployments ({', '.join(names)}); name the one "
                "to update with --deployment",
                field="deployment",
            )
        index = 0
    elif deployment in names:
        index = names.index(deployment)
    else:
        raise ConfigError(
            f"--deployment {deployment!r} is not in {path} (deployments: {', '.join(names)})",
            field="deployment",
        )
    target = deployments[index]
    target["autoscaling"] = {**(target.get("autoscaling") or {}), **block}
    parse_config(data, source=f"{path} with the planned autoscaling")  # refuse before writing
    text = yaml.safe_dump(data, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).replace(path)
    return names[index]
