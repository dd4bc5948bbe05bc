"""API keys: the key file (tenants and hashed keys), creating, revoking and checking a key.

Owns the file format (JSON, written atomically with mode 0600), key generation and
verification. A key reads ``sk-shipit-<id>-<secret>``: the id finds its record without
scanning, the secret (32 random bytes) is stored only as ``sha256(salt + secret)`` and checked
with a constant-time compare. A fast hash is enough because the secret is 256 bits from the OS
random source: unlike a password there is nothing to guess, so a slow hash (scrypt, bcrypt)
would only add milliseconds to every request. Each key belongs to a tenant; the tenant holds
what its keys may do (models, priority range, rate limits, budget). ``KeyStore.reload_if_changed``
lets a running gateway see keys created or revoked since it started. It must not serve HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from shipit.config.paths import shipit_home
from shipit.core.errors import ShipitError

PREFIX = "sk-shipit-"
ROLES = ("user", "admin")


class KeyStoreError(ShipitError):
    """The key file cannot be read or written, or a key operation is invalid."""


def default_keys_file() -> Path:
    return shipit_home() / "keys.json"


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    models: tuple[str, ...] = ()  # empty: every model
    priority_min: int = 0
    priority_max: int = 10
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    token_budget: int | None = None
    allow_routing_override: bool = False

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant: str
    role: str
    salt: str
    hash: str
    created: str
    revoked: str | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a checked key belongs to; never the key itself."""

    key_id: str
    tenant: Tenant
    role: str
    cache_salt: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@dataclass
class KeyFile:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    # Secret behind each tenant's prefix-cache salt (salts must not be guessable from names).
    salt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def to_json(self) -> dict[str, Any]:
        tenants = {
            n: {k: v for k, v in asdict(t).items() if k != "name"} for n, t in self.tenants.items()
        }
        for t in tenants.values():
            t["models"] = list(t["models"])
        return {
            "version": 1,
            "salt_secret": self.salt_secret,
            "tenants": tenants,
            "keys": [asdict(k) for k in self.keys.values()],
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> KeyFile:
        try:
            tenants = {
                n: Tenant(name=n, **{**t, "models": tuple(t.get("models", ()))})
                for n, t in data["tenants"].items()
            }
            keys = {k["id"]: KeyRecord(**k) for k in data["keys"]}
            return cls(tenants=tenants, keys=keys, salt_secret=str(data["salt_secret"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise KeyStoreError(
                f"{source} is not a shipit key file ({exc!r}); recreate it with "
                "`shipit keys create`",
                field="keys_file",
            ) from None

    def cache_salt(self, tenant: str) -> str:
        return hmac.new(bytes.fromhex(self.salt_secret), tenant.encode(), "sha256").hexdigest()[:32]


def read_key_file(path: Path) -> KeyFile:
    if not path.exists():
        return KeyFile()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc}", field="keys_file") from None
    return KeyFile.from_json(data, str(path))


def write_key_file(path: Path, kf: KeyFile) -> None:
    """Atomically: a 0600 temporary file in the same directory, fsynced, renamed over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(kf.to_json(), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def new_key(kf: KeyFile, tenant: str, role: str, name: str = "") -> tuple[KeyFile, str]:
    """Add a key for ``tenant`` (which must exist); returns the file and the key, shown once."""
    if role not in ROLES:
        raise KeyStoreError(f"role {role!r} is not one of {ROLES}", field="role")
    if tenant not in kf.tenants:
        raise KeyStoreError(f"tenant {tenant!r} does not exist", field="tenant")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = KeyRecord(key_id, tenant, role, salt, _digest(salt, secret), created, None, name)
    kf.keys[key_id] = record
    return kf, f"{PREFIX}{key_id}-{secret}"


def revoke(kf: KeyFile, key_id: str) -> KeyRecord:
    record = kf.keys.get(key_id)
    if record is None:
        raise KeyStoreError(
            f"no key with id {key_id!r}; `shipit keys list` shows the ids", field="key_id"
        )
    revoked = replace(record, revoked=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    kf.keys[key_id] = revoked
    return revoked


def split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key[len(PREFIX) :].partition("-")
    return (key_id, secret) if sep and key_id and secret else None


class KeyStore:
    """The key file as a running gateway sees it: checks keys, reloads when the file changes."""

    def __init__(self, kf: KeyFile, path: Path | None = None) -> None:
        self.path = path
        self._kf = kf
        self._mtime = self._stat()
        self._checked_s = 0.0

    @classmethod
    def open(cls, path: Path) -> KeyStore:
        return cls(read_key_file(path), path)

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    @property
    def file(self) -> KeyFile:
        return self._kf

    def active_keys(self) -> int:
        return sum(1 for k in self._kf.keys.values() if k.revoked is None)

    def reload_if_changed(self, now_s: float, every_s: float = 1.0) -> bool:
        """Re-read the file when its mtime moved (checked at most every ``every_s``)."""
        if self.path is None or now_s - self._checked_s < every_s:
            return False
        self._checked_s = now_s
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._kf, self._mtime = read_key_file(self.path), mtime
        return True

    def check(self, key: str) -> Principal | None:
        parts = split_key(key)
        if parts is None:
            return None
        record = self._kf.keys.get(parts[0])
        if record is None or record.revoked is not None:
            return None
        if not hmac.compare_digest(_digest(record.salt, parts[1]), record.hash):
            return None
        tenant = self._kf.tenants.get(record.tenant)
        if tenant is None:
            return None
        return Principal(record.id, tenant, record.role, self._kf.cache_salt(tenant.name))
