"""The key file: keys stored hashed, checked in constant time, revoked, reloaded; 0600, atomic."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shipit.services.keystore import (
    KeyFile,
    KeyStore,
    KeyStoreError,
    Tenant,
    new_key,
    read_key_file,
    revoke,
    write_key_file,
)


def _file(*tenants: str) -> KeyFile:
    kf = KeyFile()
    for t in tenants:
        kf.tenants[t] = Tenant(name=t, models=("m",), requests_per_min=5)
    return kf


def test_a_created_key_checks_and_names_its_tenant_never_storing_the_key(tmp_path: Path) -> None:
    kf, key = new_key(_file("acme"), "acme", "user")
    path = tmp_path / "keys.json"
    write_key_file(path, kf)
    text = path.read_text()
    secret = key.split("-", 3)[-1]  # sk-shipit-<id>-<secret>; the secret may hold a "-"
    assert key.startswith("sk-shipit-") and secret not in text and key not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = KeyStore.open(path)
    p = store.check(key)
    assert p is not None and p.tenant.name == "acme" and p.tenant.requests_per_min == 5
    assert not p.admin
    assert store.check(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.check("sk-shipit-nope-secret") is None
    assert store.check("Bearer whatever") is None


def test_revoked_keys_fail_and_a_running_store_reloads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    kf, key = new_key(_file("acme"), "acme", "admin")
    write_key_file(path, kf)
    store = KeyStore.open(path)
    assert store.check(key) is not None
    kf = read_key_file(path)
    revoke(kf, next(iter(kf.keys)))
    write_key_file(path, kf)
    import os

    os.utime(path, (1, 1))  # a different mtime even on coarse file systems
    assert store.reload_if_changed(now_s=10.0)
    assert store.check(key) is None


def test_tenants_get_different_cache_salts_that_survive_a_reload(tmp_path: Path) -> None:
    kf = _file("a", "b")
    kf, ka = new_key(kf, "a", "user")
    kf, kb = new_key(kf, "b", "user")
    write_key_file(tmp_path / "k.json", kf)
    store = KeyStore.open(tmp_path / "k.json")
    pa, pb = store.check(ka), store.check(kb)
    assert pa is not None and pb is not None
    assert pa.cache_salt != pb.cache_salt
    assert len(pa.cache_salt) == 32
    assert KeyStore.open(tmp_path / "k.json").check(ka).cache_salt == pa.cache_salt  # type: ignore[union-attr]


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="tenant 'ghost' does not exist"):
        new_key(_file(), "ghost", "user")
    with pytest.raises(KeyStoreError, match="role 'root'"):
        new_key(_file("a"), "a", "root")
    with pytest.raises(KeyStoreError, match="no key with id 'x'"):
        revoke(_file(), "x")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": 1}))
    with pytest.raises(KeyStoreError, match="not a shipit key file"):
        read_key_file(bad)
