"""Upstream credentials: a replica that requires a bearer token (vLLM ``--api-key``) gets it on
every proxied request; the token is read once at start (a missing variable or file is an error
naming it) and shows up in no log line, ``/shipit/status`` answer, metric or error message.
Credentials in a replica URL are redacted wherever the URL is shown."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from shipit.config.gateway import ConfigError, parse_config
from shipit.config.upstream_auth import UpstreamAuthError, resolve_upstream_auth
from shipit.core.clock import FakeClock, RealClock
from shipit.core.fleet import ReplicaState
from shipit.core.urls import redact_url
from shipit.gateway.app import create_gateway, running
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call
from support.fake_openai import FakeTiming, received, serve

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
SECRET = "sk-test-0123456789abcdef"


def config(**auth: Any) -> Any:
    return parse_config(
        {"deployments": [{"model": "m", "replicas": 0, "upstream_auth": auth or None}]}
    )


def test_a_replica_that_requires_the_bearer_gets_it_and_the_secret_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHIPIT_TEST_REPLICA_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with serve(FakeTiming(api_key=SECRET, output_tokens=2)) as url:
        cfg = config(bearer_token_env="SHIPIT_TEST_REPLICA_KEY")
        gw = create_gateway(cfg, clock=RealClock(), monitor=False)
        gw.routers["default"].add_replica("a", url, state=ReplicaState.READY)

        async def go() -> list[str]:
            async with running(gw):
                res = await call(gw, "POST", "/v1/chat/completions", CHAT)
                assert res.status == 200 and res.body.endswith(b"data: [DONE]\n\n")
                status = (await call(gw, "GET", "/shipit/status")).body.decode()
                metrics = (await call(gw, "GET", "/metrics")).body.decode()
                return [status, metrics, repr(gw.proxy.core.__dict__)]

        shown = asyncio.run(go())
        assert len(received(url)) == 1
    assert all(SECRET not in text for text in shown)
    assert SECRET not in caplog.text


def test_without_the_bearer_the_replica_401_is_relayed_and_not_retried() -> None:
    with serve(FakeTiming(api_key=SECRET)) as url:
        cfg = parse_config({"deployments": [{"model": "m", "replicas": 0}]})
        gw = create_gateway(cfg, clock=RealClock(), monitor=False)
        router = gw.routers["default"]
        router.add_replica("a", url, state=ReplicaState.READY)
        router.add_replica("b", url, state=ReplicaState.READY)

        async def go() -> None:
            async with running(gw):
                res = await call(gw, "POST", "/v1/chat/completions", CHAT)
                assert res.status == 401 and res.headers["x-shipit-upstream-status"] == "401"
                metrics = (await call(gw, "GET", "/metrics")).body.decode()
                assert "shipit_retries_total{" not in metrics  # the other replica not tried

        asyncio.run(go())
        assert received(url) == []  # refused before the body was read


def test_the_token_and_headers_are_read_from_a_file_and_the_environment(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text(SECRET + "\n")
    cfg = config(
        bearer_token_file=str(token),
        headers={"X-Team": "search", "x-extra": {"env": "EXTRA"}},
    )
    auth = resolve_upstream_auth(
        cfg.deployments[0].upstream_auth, deployment="default", environ={"EXTRA": "e1"}
    )
    assert auth.headers == {
        "authorization": f"Bearer {SECRET}",
        "x-team": "search",
        "x-extra": "e1",
    }
    assert SECRET not in repr(auth) and "e1" not in str(auth)


def test_a_missing_variable_stops_the_start_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPIT_NOT_SET_KEY", raising=False)
    cfg = config(bearer_token_env="SHIPIT_NOT_SET_KEY")
    with pytest.raises(UpstreamAuthError) as err:
        create_gateway(cfg, clock=FakeClock(), monitor=False)
    assert "SHIPIT_NOT_SET_KEY" in err.value.message and "export" in err.value.message
    assert err.value.field == "deployments[default].upstream_auth.bearer_token_env"


def test_a_missing_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    cfg = config(bearer_token_file=str(missing))
    with pytest.raises(UpstreamAuthError) as err:
        resolve_upstream_auth(cfg.deployments[0].upstream_auth, deployment="default")
    assert str(missing) in err.value.message


@pytest.mark.parametrize(
    "auth",
    [
        {"bearer_token_env": "A", "bearer_token_file": "/f"},
        {"headers": {"x": {"env": "A", "file": "/f"}}},
        {"headers": {"Content-Type": "text/plain"}},
        {"bearer_token": "inline"},
    ],
)
def test_bad_upstream_auth_is_a_config_error(auth: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        config(**auth)
    assert "upstream_auth" in str(err.value)


def test_credentials_in_a_replica_url_are_redacted_in_status() -> None:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0}]})
    upstream = FakeUpstream({"http://user:hunter2@a": FakeReplica()})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://user:hunter2@a", state=ReplicaState.READY)

    async def go() -> str:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200  # the credentials still reach the replica
            return (await call(gw, "GET", "/shipit/status")).body.decode()

    status = asyncio.run(go())
    assert "hunter2" not in status
    assert json.loads(status)["deployments"][0]["replicas"][0]["url"] == "http://***@a"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/v1"),
        ("http://user:pass@10.0.0.5:8000/v1", "http://***@10.0.0.5:8000/v1"),
        ("https://token@host/v1?q=a@b", "https://***@host/v1?q=a@b"),
        ("http://u:p@ss@host", "http://***@host"),
        ("http://host/path@x", "http://host/path@x"),
        ("GET http://u:p@h/health: refused", "GET http://***@h/health: refused"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_adapter_loads_and_health_probes_carry_the_credentials_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHIPIT_TEST_REPLICA_KEY", SECRET)
    cfg = parse_config(
        {
            "deployments": [
                {
                    "model": "m",
                    "replicas": 0,
                    "routing": {
                        "policy": "lora_affinity",
                        "lora_affinity": {"adapters": {"sql": "/p/sql"}},
                    },
                    "upstream_auth": {
                        "bearer_token_env": "SHIPIT_TEST_REPLICA_KEY",
                        "headers": {"x-team": "search"},
                    },
                }
            ]
        }
    )
    a = FakeReplica()
    upstream = FakeUpstream({"http://a": a})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    want = {"authorization": f"Bearer {SECRET}", "x-team": "search"}

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "sql"})
            assert res.status == 200
            await gw.monitors["default"].tick()

    asyncio.run(go())
    assert [url for url, _ in a.admin_calls] == ["http://a/v1/load_lora_adapter"]
    assert len(a.admin_headers) >= 2  # the load, then the probe's /health and /metrics
    assert all(h.items() >= want.items() for h in a.admin_headers)
    assert a.headers[0].items() >= want.items()
