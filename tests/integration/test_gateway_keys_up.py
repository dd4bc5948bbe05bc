"""``shipit up`` as a real process with keys required and HTTPS: keys made by ``shipit keys``,
the official ``openai`` client through TLS (401 for a wrong key, 429 past the tenant's limit,
403 for a user key on ``/shipit/status``), a key revoked while the gateway runs, the audit log."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from support.replica_process import SHIPIT, free_port
from support.up_process import SIM_MODEL

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
CHAT = {"model": SIM_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _key(keys_file: Path, *args: str) -> str:
    out = subprocess.run(
        [SHIPIT, "keys", "create", "--keys-file", str(keys_file), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return out.strip().splitlines()[-1]


def test_keys_tls_and_limits_through_shipit_up(tmp_path: Path) -> None:
    cert, tls_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(tls_key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    keys_file = tmp_path / "keys.json"
    user = _key(keys_file, "--tenant", "acme", "--rpm", "3")
    other = _key(keys_file, "--tenant", "beta")
    admin = _key(keys_file, "--tenant", "ops", "--admin")
    cfg = {
        "gateway": {
            "auth": {"required": True, "keys_file": str(keys_file)},
            "graceful_shutdown_s": 2,
        },
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": 1,
                "health_interval_s": 0.2,
                "drain_timeout_s": 1,
                "replica_args": ["--log-level", "warning"],
            }
        ],
    }
    (tmp_path / "shipit.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                SHIPIT,
                "up",
                "--config",
                str(tmp_path / "shipit.yaml"),
                "--port",
                str(port),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(tls_key),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ctx = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    clients: list[openai.OpenAI] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/health", verify=ctx, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the gateway never became ready:\n" + log.read_text())

        def client(key: str) -> openai.OpenAI:
            c = openai.OpenAI(
                base_url=base + "/v1",
                api_key=key,
                max_retries=0,
                http_client=httpx.Client(verify=ctx, timeout=30),
            )
            clients.append(c)
            return c

        acme = client(user)
        for _ in range(3):
            assert acme.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError) as limited:
            acme.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert client(other).chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        # Tenants get separate prefix caches on the replica: beta's second identical prompt hits
        # beta's cache, the same prompt from another tenant (ops) hits nothing.
        long = {
            **CHAT,
            "messages": [{"role": "user", "content": " ".join(f"word{i}" for i in range(300))}],
        }

        def cached(key: str) -> int:
            usage = client(key).chat.completions.create(**long).usage  # type: ignore[call-overload]
            details = usage.prompt_tokens_details if usage is not None else None
            return (details.cached_tokens or 0) if details is not None else 0

        first_beta, second_beta, ops = cached(other), cached(other), cached(admin)
        assert second_beta > 0 and ops == 0, (first_beta, second_beta, ops)
        with pytest.raises(openai.AuthenticationError):
            client(user + "x").chat.completions.create(**CHAT)  # type: ignore[call-overload]
        status = httpx.get(
            base + "/shipit/status", headers={"authorization": f"Bearer {other}"}, verify=ctx
        )
        assert status.status_code == 403
        status = httpx.get(base + "/shipit/status", headers={"x-api-key": admin}, verify=ctx)
        assert status.status_code == 200 and status.json()["deployments"]

        key_id = other.split("-")[2]
        subprocess.run(
            [SHIPIT, "keys", "revoke", key_id, "--keys-file", str(keys_file)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        refused = None
        deadline = time.monotonic() + 15
        while refused is None and time.monotonic() < deadline:
            try:
                client(other).chat.completions.create(**CHAT)  # type: ignore[call-overload]
                time.sleep(0.2)
            except openai.AuthenticationError as exc:
                refused = exc
        assert refused is not None, "a revoked key was still served"

        # A claimed X-Forwarded-For is not the client's address: the audit keeps both apart.
        spoofed = httpx.post(
            base + "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": "Bearer sk-shipit-nope", "x-forwarded-for": "203.0.113.9"},
            verify=ctx,
        )
        assert spoofed.status_code == 401
        audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        claimed = [e for e in audit if e.get("forwarded_for") == "203.0.113.9"]
        assert [e["event"] for e in claimed] == ["auth_failed"], claimed
        assert claimed[0]["client"].startswith("127.0.0.1:"), claimed
        events = {e["event"] for e in audit}
        assert {"key_created", "request", "rate_limited", "auth_failed", "admin"} <= events
        assert "key_revoked" in events
        text = (tmp_path / "audit.jsonl").read_text()
        assert user not in text and admin not in text
    finally:
        for c in clients:
            c.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
