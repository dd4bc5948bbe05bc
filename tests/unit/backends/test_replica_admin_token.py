"""The gateway side of the replicas' admin token: local replicas get it in their environment
(never on the command line), the upstream client sends it on control calls only (never on a
proxied client request), and configured LoRA adapters become the replicas' only LoRA roots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from shipit.backends.base import ReplicaSpec
from shipit.backends.fleet import Fleet
from shipit.backends.local import LocalProcessBackend
from shipit.config.gateway import DeploymentConfig
from shipit.core.replica_admin import ADMIN_TOKEN_ENV
from shipit.services.upstream import AiohttpUpstream

TOKEN = "gateway-admin-token-0123456789"


def test_local_replicas_get_the_token_in_their_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    backend = LocalProcessBackend(log_dir=tmp_path, admin_token=TOKEN)
    spec = ReplicaSpec("d", "m", simulate="H100:llama-3.1-8b")
    assert backend.environment(spec)[ADMIN_TOKEN_ENV] == TOKEN
    assert not any(TOKEN in arg for arg in backend.command(spec, 1234))
    assert ADMIN_TOKEN_ENV not in LocalProcessBackend(log_dir=tmp_path).environment(spec)


def test_control_calls_carry_the_token_and_proxied_requests_do_not() -> None:
    seen: dict[str, str | None] = {}

    async def record(request: web.Request) -> web.Response:
        seen[f"{request.method} {request.path}"] = request.headers.get("Authorization")
        return web.json_response({})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        upstream = AiohttpUpstream(control_headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            await upstream.get(url + "/v1/kv_events", timeout_s=5)
            await upstream.post_json(url + "/v1/load_lora_adapter", {}, timeout_s=5)
            resp = await upstream.open(
                url + "/v1/completions", b"{}", {"content-type": "application/json"},
                first_byte_timeout_s=5,
            )  # fmt: skip
            async for _ in resp.chunks():
                pass
            resp.release()
        finally:
            await upstream.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert seen["GET /v1/kv_events"] == f"Bearer {TOKEN}"
    assert seen["POST /v1/load_lora_adapter"] == f"Bearer {TOKEN}"
    assert seen["POST /v1/completions"] is None


def test_configured_adapters_are_the_replicas_lora_roots() -> None:
    plain = DeploymentConfig(name="d", model="m")
    assert "--enable-lora-loading" not in Fleet.spec(plain).extra_args
    with_loras = DeploymentConfig.model_validate(
        {
            "name": "d",
            "model": "m",
            "routing": {"lora_affinity": {"adapters": {"sql": "/a/sql", "chat": "/a/chat"}}},
        }
    )
    args = Fleet.spec(with_loras).extra_args
    assert "--enable-lora-loading" in args
    roots = [args[i + 1] for i, a in enumerate(args) if a == "--lora-root"]
    assert roots == ["/a/chat", "/a/sql"]
