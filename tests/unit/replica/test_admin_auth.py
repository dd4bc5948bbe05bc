"""Admin routes need the replica's admin token; runtime LoRA loading is opt-in and confined to
``--lora-root`` directories; the gateway-only cache-salt header needs the token too.

Before these rules any client that could reach a replica could load an adapter from any path
(and read which paths exist from the errors), read the KV-event feed, and pick any cache salt.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from shipit.core.errors import InvalidRequestError
from shipit.engine.block_manager import hash_prompt_blocks, salt_key
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from support.tiny_lora import write_tiny_lora
from support.tiny_model import write_tiny_hf_model

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIM = ReplicaSettings(model="m", simulate="H100:llama-3.1-8b", admin_token=TOKEN)
ADMIN_GETS = ["/v1/kv_events", "/shipit/startup"]
ADMIN_POSTS = ["/v1/load_lora_adapter", "/v1/unload_lora_adapter"]


def sim_engine(settings: ReplicaSettings) -> LLMEngine:
    return build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)


def wait_ready(client: TestClient) -> None:
    for _ in range(500):
        if client.get("/health").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


def sim_client(settings: ReplicaSettings) -> TestClient:
    return TestClient(create_app(settings, engine_factory=sim_engine))


def admin_calls(client: TestClient, headers: dict[str, str]) -> list[Any]:
    out = [client.get(p, headers=headers) for p in ADMIN_GETS]
    body = {"lora_name": "a", "lora_path": "/etc"}
    return out + [client.post(p, json=body, headers=headers) for p in ADMIN_POSTS]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "not-bearer"],
)
def test_admin_routes_refuse_a_missing_or_wrong_token(headers: dict[str, str]) -> None:
    with sim_client(SIM) as client:
        wait_ready(client)
        for r in admin_calls(client, headers):
            assert r.status_code == 401, (r.request.url, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in r.text


def test_admin_routes_answer_with_the_token() -> None:
    with sim_client(SIM) as client:
        wait_ready(client)
        assert client.get("/v1/kv_events", headers=AUTH).status_code == 200
        assert client.get("/shipit/startup", headers=AUTH).json()["phase"] == "ready"
        # Authorized, but loading at run time is off by default.
        r = client.post(
            "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"}, headers=AUTH
        )
        assert r.status_code == 403 and "--enable-lora-loading" in r.json()["error"]["message"]


def test_without_a_token_admin_routes_are_refused_unless_explicitly_opened() -> None:
    closed = dataclasses.replace(SIM, admin_token=None)
    with sim_client(closed) as client:
        wait_ready(client)
        for r in admin_calls(client, {}):
            assert r.status_code == 403
            assert "SHIPIT_REPLICA_ADMIN_TOKEN" in r.json()["error"]["message"]
    opened = dataclasses.replace(closed, allow_unauthenticated_admin=True)
    with sim_client(opened) as client:
        wait_ready(client)
        assert client.get("/v1/kv_events").status_code == 200


def test_unauthenticated_admin_is_only_allowed_on_loopback() -> None:
    with pytest.raises(InvalidRequestError, match="loopback"):
        ReplicaSettings(model="m", host="0.0.0.0", allow_unauthenticated_admin=True)
    ReplicaSettings(model="m", host="127.0.0.1", allow_unauthenticated_admin=True)
    ReplicaSettings(model="m", host="::1", allow_unauthenticated_admin=True)


def test_the_token_is_never_in_the_settings_repr_and_must_not_be_trivial() -> None:
    assert TOKEN not in repr(SIM)
    with pytest.raises(InvalidRequestError, match="at least 16"):
        ReplicaSettings(model="m", admin_token="short")


def test_lora_loading_needs_a_root_and_roots_need_loading() -> None:
    with pytest.raises(InvalidRequestError, match="--lora-root"):
        ReplicaSettings(model="m", enable_lora_loading=True)
    with pytest.raises(InvalidRequestError, match="--enable-lora-loading"):
        ReplicaSettings(model="m", lora_roots=("/tmp",))


# ----- LoRA loading confined to roots (the tiny checkpoint) ---------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")))


@pytest.fixture
def layout(tiny: LoadedModel, tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    inside_a = write_tiny_lora(root / "a", tiny.config, seed=1)
    inside_b = write_tiny_lora(root / "b", tiny.config, seed=2)
    secret = write_tiny_lora(outside / "secret", tiny.config, seed=3)
    (outside / "secret" / "adapter_config.json").write_text('{"r": "TOP-SECRET-CONTENT"')
    (root / "escape").symlink_to(secret, target_is_directory=True)
    return {"root": root, "a": inside_a, "b": inside_b, "secret": secret, "outside": outside}


def tiny_client(tiny: LoadedModel, root: Path) -> TestClient:
    from shipit.engine.engine import LLMEngine as Engine

    settings = ReplicaSettings(
        model="tiny",
        admin_token=TOKEN,
        enable_lora_loading=True,
        lora_roots=(str(root),),
    )

    def factory(s: ReplicaSettings) -> LLMEngine:
        return Engine.from_loaded(tiny, EngineConfig(kv_cache_bytes=16 * 1024 * 1024))

    return TestClient(create_app(settings, engine_factory=factory), headers=AUTH)


def load(client: TestClient, name: str, path: Path | str) -> Any:
    return client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})


def test_adapters_load_from_inside_a_root(tiny: LoadedModel, layout: dict[str, Path]) -> None:
    with tiny_client(tiny, layout["root"]) as client:
        wait_ready(client)
        assert load(client, "a", layout["a"]).status_code == 200
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert "a" in ids


def test_paths_outside_the_roots_are_refused_alike(
    tiny: LoadedModel, layout: dict[str, Path]
) -> None:
    attempts = {
        "an existing adapter outside": layout["secret"],
        "a missing dir outside": layout["outside"] / "nope",
        "a file outside": layout["secret"] / "adapter_config.json",
        "dot-dot out of the root": layout["root"] / ".." / "outside" / "secret",
        "dot-dot that stays inside": layout["root"] / "a" / ".." / "b",
        "a symlink leading out": layout["root"] / "escape",
        "a relative path": "outside/secret",
        "/etc": "/etc",
    }
    with tiny_client(tiny, layout["root"]) as client:
        wait_ready(client)
        messages = set()
        for what, path in attempts.items():
            r = load(client, what.replace(" ", "-"), path)
            assert r.status_code == 403, (what, r.text)
            error = r.json()["error"]
            assert error["code"] == "permission_denied" and error["param"] == "lora_path"
            assert "TOP-SECRET" not in r.text
            messages.add(error["message"].replace(repr(str(path)), "PATH"))
        # The same words whether the path exists or not: nothing to learn about the disk.
        assert len(messages) == 1, messages


def test_a_loaded_name_cannot_be_repointed(tiny: LoadedModel, layout: dict[str, Path]) -> None:
    with tiny_client(tiny, layout["root"]) as client:
        wait_ready(client)
        assert load(client, "x", layout["a"]).status_code == 200
        assert load(client, "x", layout["a"]).status_code == 200  # same path: idempotent
        r = load(client, "x", layout["b"])
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        assert str(layout["a"]) not in r.text  # where it came from is not told either
        assert client.post("/v1/unload_lora_adapter", json={"lora_name": "x"}).status_code == 200
        assert load(client, "x", layout["b"]).status_code == 200


# ----- cache salt -----------------------------------------------------------------------------
def stored_hashes(client: TestClient, after: int, salt: str | None = None) -> tuple[set[int], int]:
    page = client.get("/v1/kv_events", params={"after": after}, headers=AUTH).json()
    stored = {e["block_hash"] for e in page["events"] if e["kind"] == "stored"}
    assert all(e["salt_key"] == salt_key(salt) for e in page["events"])
    return stored, page["next_after"]


def token_ids(prompt: str) -> list[int]:
    return sim_engine(SIM).tokenizer.encode(prompt)


def test_salt_keys_name_salts_without_revealing_them() -> None:
    assert salt_key(None) is None and salt_key("") is None
    assert salt_key("tenant-1") == salt_key("tenant-1") != salt_key("tenant-2")
    assert "tenant" not in str(salt_key("tenant-1"))


def test_the_cache_salt_header_needs_the_token_and_keys_the_prefix_cache() -> None:
    prompt = " ".join(f"w{i}" for i in range(40))  # two full 16-token blocks
    body = {"model": "m", "prompt": prompt, "max_tokens": 1}
    with sim_client(SIM) as client:
        wait_ready(client)
        r = client.post("/v1/completions", json=body, headers={"x-shipit-cache-salt": "t1"})
        assert r.status_code == 401
        assert client.post("/v1/completions", json=body).status_code == 200
        plain, after = stored_hashes(client, -1)
        salted = {**AUTH, "x-shipit-cache-salt": "tenant-1"}
        assert client.post("/v1/completions", json=body, headers=salted).status_code == 200
        tenant1, after = stored_hashes(client, after, "tenant-1")
        assert len(tenant1) == 2 and not tenant1 & plain  # no block shared across salts
        assert tenant1 == set(hash_prompt_blocks(token_ids(prompt), 16, cache_salt="tenant-1"))
        assert client.post("/v1/completions", json=body, headers=salted).status_code == 200
        again, after = stored_hashes(client, after, "tenant-1")
        assert not again  # the same salt hits its own cached blocks


def test_admin_token_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shipit.cli.replica import _admin_token

    monkeypatch.setenv("SHIPIT_REPLICA_ADMIN_TOKEN", "from-env-0123456789")
    assert _admin_token(None) == "from-env-0123456789"
    f = tmp_path / "token"
    f.write_text("from-file-0123456789\n")
    f.chmod(0o600)
    assert _admin_token(f) == "from-file-0123456789"
    with pytest.raises(InvalidRequestError, match="cannot read"):
        _admin_token(tmp_path / "missing")


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 129, "\x1b[31mred"])
def test_adapter_names_are_printable_and_short(
    tiny: LoadedModel, layout: dict[str, Path], name: str
) -> None:
    with tiny_client(tiny, layout["root"]) as client:
        wait_ready(client)
        r = load(client, name, layout["a"])
        assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name"
