"""``shipit up --backend ray``: the ``backend: ray`` deployments' shared ``RayBackend``, joined to
its cluster before the gateway serves. Ray itself is imported only when the backend connects."""

from __future__ import annotations

from rich.console import Console

from shipit.backends.base import ReplicaBackend
from shipit.config.gateway import ConfigError, ShipitConfig


def ray_backends(
    cfg: ShipitConfig, address: str | None, admin_token: str, console: Console
) -> dict[str, ReplicaBackend]:
    """``backend: ray`` deployments share one ``RayBackend``, joined to its cluster now so a
    missing Ray or an unreachable cluster stops ``shipit up`` at once, with what to do."""
    from shipit.backends.ray import RayBackend
    from shipit.backends.ray_placement import RayBackendError

    configs = {d.name: d.ray_backend for d in cfg.deployments if d.backend == "ray"}
    if not configs:
        raise ConfigError(
            f"--ray-address {address}: no deployment has backend: ray; add --backend ray "
            "(or backend: ray in shipit.yaml)",
            field="ray_address",
        )
    try:
        backend = RayBackend(configs, address=address, admin_token=admin_token)
        console.print(f"joining Ray cluster {backend.address or '(single node, started here)'}")
        backend.connect()
    except RayBackendError as exc:
        raise ConfigError(exc.message, field="ray_backend") from exc
    return dict.fromkeys(configs, backend)
