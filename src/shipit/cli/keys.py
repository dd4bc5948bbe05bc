"""``shipit keys create|list|revoke|tenant``: the gateway's API keys and their tenants.

Thin: reads and writes the key file (``services.keystore``; ``$SHIPIT_HOME/keys.json`` unless
``--keys-file``), prints a new key once (only its hash is stored), and records every change in
the audit log next to the key file. A running gateway picks up changes within a second.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shipit.services.audit import AuditLog
from shipit.services.keystore import (
    KeyStoreError,
    Tenant,
    default_keys_file,
    new_key,
    read_key_file,
    revoke,
    split_key,
    write_key_file,
)

EXAMPLES = """
Examples:

  shipit keys create --tenant acme --models smollm2-135m-instruct --rpm 60 --tpm 100000
  shipit keys create --tenant ops --admin          # for /shipit/* and /metrics
  shipit keys list
  shipit keys tenant acme --token-budget 10000000   # change a tenant's limits
  shipit keys revoke 3f9a1c2b7d4e
"""

KEYS_FILE = typer.Option(None, "--keys-file", help="The key file (default $SHIPIT_HOME/keys.json).")


def api_key_headers() -> dict[str, str]:
    """``Authorization`` for a gateway that requires keys: ``$SHIPIT_API_KEY`` when set (an
    admin key for ``shipit status`` and ``shipit top``). Sent to the gateway only."""
    key = os.environ.get("SHIPIT_API_KEY")
    return {"authorization": f"Bearer {key}"} if key else {}


def _path(keys_file: Path | None) -> Path:
    return keys_file or default_keys_file()


def _fail(console: Console, exc: KeyStoreError) -> typer.Exit:
    console.print(f"[red]error:[/] {exc.message}")
    return typer.Exit(2)


def _priority(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    lo, sep, hi = spec.partition(":")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        raise KeyStoreError(
            f"--priority {spec!r} must be LOW:HIGH, two integers such as 0:10", field="priority"
        ) from None
    if not sep or low > high:
        raise KeyStoreError(
            f"--priority {spec!r} must be LOW:HIGH with LOW <= HIGH (lower runs first)",
            field="priority",
        )
    return low, high


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise KeyStoreError(f"{name} must be at least 1, got {value}; omit it for no limit")
    return value


def key_id_of(key: str) -> str:
    parts = split_key(key)
    return parts[0] if parts else "?"


def _updated(
    t: Tenant,
    models: str | None,
    priority: str | None,
    rpm: int | None,
    tpm: int | None,
    token_budget: int | None,
    allow_routing: bool | None,
) -> Tenant:
    """``t`` with the limits given (``None``: unchanged)."""
    changes: dict[str, object] = {}
    if models is not None:
        changes["models"] = tuple(m.strip() for m in models.split(",") if m.strip())
    if (prio := _priority(priority)) is not None:
        changes["priority_min"], changes["priority_max"] = prio
    for field, value in (
        ("requests_per_min", _positive("--rpm", rpm)),
        ("tokens_per_min", _positive("--tpm", tpm)),
        ("token_budget", _positive("--token-budget", token_budget)),
    ):
        if value is not None:
            changes[field] = value
    if allow_routing is not None:
        changes["allow_routing_override"] = allow_routing
    return replace(t, **changes)  # type: ignore[arg-type]


MODELS = typer.Option(
    None, "--models", help="Comma-separated models the tenant may use (default: all)."
)
PRIORITY = typer.Option(
    None, "--priority", help="LOW:HIGH priorities the tenant may ask for (default 0:10)."
)
RPM = typer.Option(None, "--rpm", help="Requests per minute (default: none).")
TPM = typer.Option(None, "--tpm", help="Tokens per minute (default: none).")
BUDGET = typer.Option(
    None, "--token-budget", help="Total tokens the tenant may use (default: none)."
)
ROUTING = typer.Option(
    None, "--allow-routing/--no-allow-routing", help="May send x-shipit-routing."
)


def tenant_cmd(
    tenant: str = typer.Argument(..., help="The tenant to change."),
    models: str | None = MODELS,
    priority: str | None = PRIORITY,
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    token_budget: int | None = BUDGET,
    allow_routing: bool | None = ROUTING,
    keys_file: Path | None = KEYS_FILE,
) -> None:
    """Change an existing tenant's limits (the ones given; a running gateway sees them within
    a second) without creating a key."""
    console = Console(stderr=True)
    path = _path(keys_file)
    try:
        kf = read_key_file(path)
        if tenant not in kf.tenants:
            raise KeyStoreError(
                f"tenant {tenant!r} does not exist; `shipit keys create --tenant {tenant}` "
                "creates it with its first key",
                field="tenant",
            )
        t = _updated(kf.tenants[tenant], models, priority, rpm, tpm, token_budget, allow_routing)
        kf.tenants[tenant] = t
        write_key_file(path, kf)
    except KeyStoreError as exc:
        raise _fail(console, exc) from exc
    audit = AuditLog(path.parent / "audit.jsonl")
    audit.record("tenant_changed", tenant=tenant, limits=asdict(t), via="cli")
    audit.close()
    console.print(f"tenant {tenant!r}: {asdict(t)}")


def create(
    tenant: str = typer.Option(..., "--tenant", "-t", help="Who the key belongs to."),
    admin: bool = typer.Option(False, "--admin", help="An admin key (/shipit/*, /metrics)."),
    models: str | None = MODELS,
    priority: str | None = PRIORITY,
    rpm: int | None = RPM,
    tpm: int | None = TPM,
    token_budget: int | None = BUDGET,
    allow_routing: bool | None = ROUTING,
    name: str = typer.Option("", "--name", help="A label for the key (shown by list)."),
    keys_file: Path | None = KEYS_FILE,
) -> None:
    """Create a key (printed once). A new tenant is created with the limits given; for an
    existing tenant, the limits given replace its current ones (the others stay)."""
    console = Console(stderr=True)
    path = _path(keys_file)
    try:
        kf = read_key_file(path)
        kf.tenants[tenant] = _updated(
            kf.tenants.get(tenant, Tenant(name=tenant)),
            models,
            priority,
            rpm,
            tpm,
            token_budget,
            allow_routing,
        )
        kf, key = new_key(kf, tenant, "admin" if admin else "user", name)
        write_key_file(path, kf)
    except KeyStoreError as exc:
        raise _fail(console, exc) from exc
    key_id = key_id_of(key)
    audit = AuditLog(path.parent / "audit.jsonl")
    audit.record("key_created", key_id=key_id, tenant=tenant, admin=admin, via="cli")
    audit.close()
    console.print(f"created key {key_id} for tenant {tenant!r} in {path}; it is shown only once:")
    typer.echo(key)


def list_keys(
    keys_file: Path | None = KEYS_FILE,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per key, for scripts."),
) -> None:
    """The keys (ids, never the keys) and their tenants' limits."""
    console = Console()
    try:
        kf = read_key_file(_path(keys_file))
    except KeyStoreError as exc:
        raise _fail(Console(stderr=True), exc) from exc
    if as_json:
        for k in kf.keys.values():
            t = kf.tenants.get(k.tenant, Tenant(name=k.tenant))
            row: dict[str, object] = {"id": k.id, "name": k.name, "tenant": k.tenant}
            row["role"] = k.role
            row |= {"created": k.created, "revoked": k.revoked, "limits": asdict(t)}
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"keys in {_path(keys_file)}", title_justify="left")
    for col in ("id", "name", "tenant", "role", "models", "priority", "rpm", "tpm", "budget"):
        table.add_column(col)
    table.add_column("status")
    table.columns[0].no_wrap = True
    for k in kf.keys.values():
        t = kf.tenants.get(k.tenant, Tenant(name=k.tenant))
        table.add_row(
            k.id,
            k.name,
            k.tenant,
            k.role,
            ",".join(t.models) or "all",
            f"{t.priority_min}:{t.priority_max}",
            str(t.requests_per_min or "-"),
            str(t.tokens_per_min or "-"),
            str(t.token_budget or "-"),
            f"revoked {k.revoked}" if k.revoked else "active",
        )
    console.print(table)


def revoke_key(
    key_id: str = typer.Argument(..., help="The key's id (from `shipit keys list`)."),
    keys_file: Path | None = KEYS_FILE,
) -> None:
    """Revoke a key: the gateway refuses it (401) within a second."""
    console = Console(stderr=True)
    path = _path(keys_file)
    try:
        kf = read_key_file(path)
        record = revoke(kf, key_id)
        write_key_file(path, kf)
    except KeyStoreError as exc:
        raise _fail(console, exc) from exc
    audit = AuditLog(path.parent / "audit.jsonl")
    audit.record("key_revoked", key_id=key_id, tenant=record.tenant, via="cli")
    audit.close()
    console.print(f"revoked key {key_id} (tenant {record.tenant!r})")


def register(app: typer.Typer) -> None:
    keys = typer.Typer(
        name="keys",
        help="Manage the gateway's API keys and tenants.\n" + EXAMPLES,
        no_args_is_help=True,
    )
    keys.command("create")(create)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke_key)
    keys.command("tenant")(tenant_cmd)
    app.add_typer(keys)
