"""``shipit keys`` and ``shipit up``'s security checks: a key printed once and stored hashed,
listed by id, revoked; limits on the tenant; a keyless gateway refused where keys are required."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shipit.cli.main import build_app
from shipit.cli.up import build_config
from shipit.cli.up_security import check_security
from shipit.config.gateway import ConfigError
from shipit.services.keystore import KeyStore

runner = CliRunner()


def _keys(*args: str) -> str:
    res = runner.invoke(build_app(), ["keys", *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    out = _keys(
        "create",
        "--tenant",
        "acme",
        "--models",
        "m1,m2",
        "--priority",
        "1:4",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--token-budget",
        "5000",
        "--keys-file",
        str(path),
    )
    key = next(line for line in out.splitlines() if line.startswith("sk-shipit-"))
    assert key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    p = KeyStore.open(path).check(key)
    assert p is not None and not p.admin
    t = p.tenant
    assert (t.models, t.priority_min, t.priority_max) == (("m1", "m2"), 1, 4)
    assert (t.requests_per_min, t.tokens_per_min, t.token_budget) == (60, 1000, 5000)
    listed = [
        json.loads(x) for x in _keys("list", "--json", "--keys-file", str(path)).split("\n") if x
    ]
    assert [(k["id"], k["tenant"], k["revoked"]) for k in listed] == [(p.key_id, "acme", None)]
    assert key not in _keys("list", "--keys-file", str(path))
    _keys("revoke", p.key_id, "--keys-file", str(path))
    assert KeyStore.open(path).check(key) is None
    events = [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events == ["key_created", "key_revoked"]


def test_an_admin_key_and_bad_flags(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    out = _keys("create", "--tenant", "ops", "--admin", "--keys-file", str(path))
    key = out.strip().splitlines()[-1]
    p = KeyStore.open(path).check(key)
    assert p is not None and p.admin
    res = runner.invoke(
        build_app(), ["keys", "create", "-t", "x", "--priority", "5:1", "--keys-file", str(path)]
    )
    assert res.exit_code == 2 and "LOW <= HIGH" in res.output
    res = runner.invoke(build_app(), ["keys", "revoke", "nope", "--keys-file", str(path)])
    assert res.exit_code == 2 and "no key with id 'nope'" in res.output


def _cfg(tmp_path: Path, host: str, **security: object) -> object:
    return build_config(
        None,
        port=None,
        host=host,
        replicas=None,
        routing=None,
        model=None,
        simulate=None,
        replica_url=[],
        security={"keys_file": tmp_path / "keys.json", **security},
    )


def test_up_refuses_to_serve_keyless_where_keys_are_required(tmp_path: Path) -> None:
    console = Console(stderr=True)
    with pytest.raises(ConfigError, match="holds no active key"):
        check_security(_cfg(tmp_path, "0.0.0.0"), console)  # type: ignore[arg-type]
    check_security(_cfg(tmp_path, "127.0.0.1"), console)  # type: ignore[arg-type]
    _keys("create", "--tenant", "a", "--keys-file", str(tmp_path / "keys.json"))
    check_security(_cfg(tmp_path, "0.0.0.0"), console)  # type: ignore[arg-type]


def test_no_auth_on_a_public_address_warns_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(tmp_path, "0.0.0.0", no_auth=True)
    check_security(cfg, Console(stderr=True))  # type: ignore[arg-type]
    assert "API keys are OFF on 0.0.0.0" in capsys.readouterr().err


def test_tls_flags_need_existing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS cert file"):
        _cfg(tmp_path, "127.0.0.1", tls_cert=tmp_path / "no.pem", tls_key=tmp_path / "no.key")


def test_status_sends_the_admin_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from shipit.cli import status

    seen: list[dict[str, str]] = []

    def fake_get(url: str, *, timeout: float, headers: dict[str, str]) -> httpx.Response:
        seen.append(headers)
        return httpx.Response(200, json={"deployments": []}, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    monkeypatch.delenv("SHIPIT_API_KEY", raising=False)
    status.fetch("http://gw")
    monkeypatch.setenv("SHIPIT_API_KEY", "sk-shipit-abc-def")
    status.fetch("http://gw")
    assert seen == [{}, {"authorization": "Bearer sk-shipit-abc-def"}]


def test_tenant_changes_limits_without_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = _keys("create", "-t", "acme", "--rpm", "5", "--keys-file", str(path)).split()[-1]
    _keys("tenant", "acme", "--token-budget", "900", "--keys-file", str(path))
    store = KeyStore.open(path)
    p = store.check(key)
    assert p is not None and (p.tenant.requests_per_min, p.tenant.token_budget) == (5, 900)
    assert store.active_keys() == 1
    res = runner.invoke(build_app(), ["keys", "tenant", "ghost", "--keys-file", str(path)])
    assert res.exit_code == 2 and "tenant 'ghost' does not exist" in res.output
