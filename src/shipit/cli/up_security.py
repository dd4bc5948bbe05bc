"""``shipit up``'s security flags and start-up checks: keys, TLS, the loud ``--no-auth``.

Thin: folds ``--no-auth``, ``--keys-file``, ``--tls-cert`` and ``--tls-key`` into the config
(flags beat the file) and, before anything starts, refuses a gateway that requires keys but
has none (it could answer nothing but 401) and warns loudly when keys are off on an address
other machines can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from shipit.config.gateway import ConfigError, ShipitConfig, parse_config
from shipit.config.security import auth_required, is_loopback
from shipit.services.keystore import KeyStoreError, default_keys_file, read_key_file


def apply_security_flags(
    cfg: ShipitConfig,
    *,
    no_auth: bool = False,
    keys_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> ShipitConfig:
    data = cfg.model_dump(exclude_unset=True)
    gateway: dict[str, Any] = data.setdefault("gateway", {})
    auth: dict[str, Any] = gateway.setdefault("auth", {})
    if no_auth:
        auth["required"] = False
    if keys_file is not None:
        auth["keys_file"] = str(keys_file)
    tls: dict[str, Any] = gateway.setdefault("tls", {})
    if tls_cert is not None:
        tls["cert"] = str(tls_cert)
    if tls_key is not None:
        tls["key"] = str(tls_key)
    for name in ("cert", "key"):
        if tls.get(name) and not Path(tls[name]).is_file():
            raise ConfigError(
                f"TLS {name} file {tls[name]!r} does not exist; give a PEM file "
                f"(--tls-{name} or gateway.tls.{name})",
                field=f"gateway.tls.{name}",
            )
    return parse_config(data, source="flags")


def check_security(cfg: ShipitConfig, console: Console) -> None:
    gw = cfg.gateway
    if not auth_required(gw.auth, gw.host):
        if not is_loopback(gw.host):
            console.print(
                f"[bold red]WARNING: API keys are OFF on {gw.host}:[/] anyone who can reach "
                "this port can use every model and the admin endpoints. Drop --no-auth / "
                "auth.required: false and create keys with `shipit keys create`."
            )
        return
    path = Path(gw.auth.keys_file) if gw.auth.keys_file else default_keys_file()
    try:
        active = sum(1 for k in read_key_file(path).keys.values() if k.revoked is None)
    except KeyStoreError as exc:
        raise ConfigError(exc.message, field="gateway.auth.keys_file") from exc
    if not active:
        raise ConfigError(
            f"API keys are required on {gw.host} but {path} holds no active key, so every "
            "request would get 401. Create one with `shipit keys create --tenant NAME` (add "
            "--admin for /shipit/* and /metrics), or pass --no-auth to serve without keys.",
            field="gateway.auth",
        )
    console.print(f"API keys required ({active} active in {path})")
