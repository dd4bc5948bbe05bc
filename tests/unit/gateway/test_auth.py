"""The gateway's front door, in-process: keys (401/403), admin routes, tenants' rate limits and
budgets (429 with OpenAI's headers), cache isolation, priority/deadline checks, edge limits and
the audit log. Scripted replicas (``FakeUpstream``) and a fake clock; no sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.services.audit import AuditLog
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key, write_key_file
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
USAGE = (
    b'{"choices":[{"message":{"content":"hi"}}],'
    b'"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}'
)


class Env:
    def __init__(
        self,
        tmp: Path,
        *,
        host: str = "0.0.0.0",
        gateway: dict[str, Any] | None = None,
        tenants: dict[str, dict[str, Any]] | None = None,
        **dep: Any,
    ) -> None:
        self.kf = KeyFile()
        self.keys: dict[str, str] = {}
        for name, spec in (tenants or {"acme": {}}).items():
            admin = spec.pop("admin", False)
            self.kf.tenants[name] = Tenant(name=name, **spec)
            self.kf, self.keys[name] = new_key(self.kf, name, "admin" if admin else "user")
        self.store = KeyStore(self.kf)
        self.audit_path = tmp / "audit.jsonl"
        cfg = parse_config(
            {
                "gateway": {"host": host, **(gateway or {})},
                "deployments": [{"model": "m", "replicas": 0, **dep}],
            }
        )
        self.replica = FakeReplica(chunks=[USAGE])
        self.upstream = FakeUpstream({"http://a": self.replica})
        self.clock = FakeClock()
        self.gw: Gateway = create_gateway(
            cfg,
            clock=self.clock,
            upstream_factory=lambda: self.upstream,
            monitor=False,
            keys=self.store,
            audit=AuditLog(self.audit_path),
        )
        self.gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)

    def auth(self, tenant: str = "acme", **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[tenant]}", **extra}

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def run(env: Env, *calls: tuple[Any, ...]) -> list[Any]:
    async def go() -> list[Any]:
        async with running(env.gw):
            out = []
            for method, path, body, headers in calls:
                out.append(await call(env.gw, method, path, body, headers=headers))
            return out

    return asyncio.run(go())


def test_keys_are_off_on_loopback_by_default(tmp_path: Path) -> None:
    env = Env(tmp_path, host="127.0.0.1")
    (res,) = run(env, ("POST", "/v1/chat/completions", CHAT, {}))
    assert res.status == 200


def test_keys_are_required_on_other_addresses_401_in_openai_shape(tmp_path: Path) -> None:
    env = Env(tmp_path)
    missing, wrong, bearer, xkey = run(
        env,
        ("POST", "/v1/chat/completions", CHAT, {}),
        ("POST", "/v1/chat/completions", CHAT, {"authorization": "Bearer sk-shipit-abc-def"}),
        ("POST", "/v1/chat/completions", CHAT, env.auth()),
        ("POST", "/v1/chat/completions", CHAT, {"x-api-key": env.keys["acme"]}),
    )
    assert missing.status == 401 and wrong.status == 401
    err = missing.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"
    assert "didn't provide an API key" in err["message"]
    assert "Incorrect API key" in wrong.json()["error"]["message"]
    assert bearer.status == 200 and xkey.status == 200
    assert len(env.replica.bodies) == 2  # the refused requests never reached a replica


def test_auth_required_false_turns_keys_off_on_any_address_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = Env(tmp_path, gateway={"auth": {"required": False}})
    assert "API keys are OFF on 0.0.0.0" in caplog.text
    (res,) = run(env, ("POST", "/v1/chat/completions", CHAT, {}))
    assert res.status == 200


def test_a_model_the_tenant_may_not_use_is_403(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"models": ("other",)}})
    (res,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert res.status == 403
    err = res.json()["error"]
    assert err["code"] == "model_not_allowed" and err["param"] == "model"
    assert "`m`" in err["message"] and "other" in err["message"]


def test_tokenizer_routes_check_the_tenants_models_and_the_json_limits(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"models": ("other",)}})
    deep = b'{"model":"m","prompt":' + b"[" * 40 + b"]" * 40 + b"}"
    tok, detok, nested = run(
        env,
        ("POST", "/tokenize", {"model": "m", "prompt": "hi"}, env.auth()),
        ("POST", "/detokenize", {"model": "m", "tokens": [1, 2]}, env.auth()),
        ("POST", "/tokenize", deep, env.auth()),
    )
    for res in (tok, detok):
        assert res.status == 403 and res.json()["error"]["code"] == "model_not_allowed"
    assert nested.status == 400 and "nested deeper than 32" in nested.json()["error"]["message"]
    assert env.replica.bodies == []


def test_admin_routes_need_an_admin_key_and_metrics_is_configurable(tmp_path: Path) -> None:
    tenants = {"acme": {}, "ops": {"admin": True}}
    env = Env(tmp_path, tenants=tenants)
    user, admin, metrics_user, health = run(
        env,
        ("GET", "/shipit/status", None, env.auth()),
        ("GET", "/shipit/status", None, env.auth("ops")),
        ("GET", "/metrics", None, env.auth()),
        ("GET", "/health", None, {}),
    )
    assert user.status == 403 and "needs an admin key" in user.json()["error"]["message"]
    assert admin.status == 200 and "deployments" in admin.json()
    assert metrics_user.status == 403
    assert health.status == 200
    open_env = Env(tmp_path, gateway={"auth": {"metrics": "open"}})
    (metrics,) = run(open_env, ("GET", "/metrics", None, {}))
    assert metrics.status == 200


def test_requests_per_minute_429_with_retry_after_and_openai_headers(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"requests_per_min": 2}})
    first, second, third = run(env, *[("POST", "/v1/chat/completions", CHAT, env.auth())] * 3)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status == 429
    assert third.headers["retry-after"] == "30"
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in third.json()["error"]["message"]
    env.clock.advance(30.0)
    (later,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert later.status == 200


def test_tokens_per_minute_counts_the_usage_of_finished_answers(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"tokens_per_min": 60}})
    first, second, third = run(env, *[("POST", "/v1/chat/completions", CHAT, env.auth())] * 3)
    assert first.status == 200 and first.headers["x-ratelimit-remaining-tokens"] == "60"
    assert second.status == 200 and second.headers["x-ratelimit-remaining-tokens"] == "10"
    assert third.status == 429  # 100 tokens used: the bucket is 40 in debt
    assert third.headers["x-ratelimit-limit-tokens"] == "60"
    assert third.headers["x-ratelimit-reset-tokens"] == "1m40s"  # 40 in debt: 100 to refill
    assert "60 tokens per minute" in third.json()["error"]["message"]
    assert env.gw.security.state("acme").spent_tokens == 100


def test_an_exhausted_budget_is_429_insufficient_quota(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"token_budget": 50}})
    ok, refused = run(env, *[("POST", "/v1/chat/completions", CHAT, env.auth())] * 2)
    assert ok.status == 200
    assert refused.status == 429
    err = refused.json()["error"]
    assert err["code"] == "insufficient_quota" and "token budget of 50" in err["message"]
    env.clock.advance(86400.0)
    (still,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert still.status == 429


def test_one_tenant_over_its_limit_under_load_leaves_another_untouched(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"a": {"requests_per_min": 10}, "b": {"requests_per_min": 1000}})
    env.replica.chunks = [USAGE]

    async def go() -> tuple[list[int], list[int]]:
        async with running(env.gw):
            reqs = [("a", i) for i in range(60)] + [("b", i) for i in range(60)]
            results = await asyncio.gather(
                *[
                    call(env.gw, "POST", "/v1/chat/completions", CHAT, headers=env.auth(t))
                    for t, _ in reqs
                ]
            )
            a = [r.status for (t, _), r in zip(reqs, results, strict=True) if t == "a"]
            b = [r.status for (t, _), r in zip(reqs, results, strict=True) if t == "b"]
            return a, b

    a, b = asyncio.run(go())
    assert a.count(200) == 10 and a.count(429) == 50
    assert b == [200] * 60


def test_each_tenant_gets_its_salt_and_a_client_salt_is_replaced(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"a": {}, "b": {}, "ops": {"admin": True}})
    sneaky = {**CHAT, "cache_salt": "victim-salt"}
    run(
        env,
        ("POST", "/v1/chat/completions", sneaky, env.auth("a", **{"x-shipit-cache-salt": "v"})),
        ("POST", "/v1/chat/completions", CHAT, env.auth("b")),
        ("POST", "/v1/chat/completions", sneaky, env.auth("ops")),
    )
    salts = [json.loads(b)["cache_salt"] for b in env.replica.bodies]
    forwarded = [h.get("x-shipit-cache-salt") for h in env.replica.headers]
    a_salt, b_salt = (env.store.check(env.keys[t]).cache_salt for t in "ab")  # type: ignore[union-attr]
    assert salts == [a_salt, b_salt, "victim-salt"]  # admins may pick a salt
    assert json.loads(env.replica.bodies[0])["messages"] == CHAT["messages"]
    # The salt travels in the body (vLLM's cache_salt); the replica-only salt header needs the
    # replica's admin token, so it is never sent on a proxied request.
    assert forwarded == [None, None, None]


def test_prefix_hashes_are_keyed_by_the_tenant_salt(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"a": {}, "b": {}}, routing={"policy": "prefix_cache"})
    long = {"model": "m", "prompt": "x" * 400}
    seen: list[tuple[int, ...]] = []
    router = env.gw.routers["default"]
    place_now = router.place_now

    def spy(view: Any, **kw: Any) -> Any:
        seen.append(view.prefix_hashes)
        return place_now(view, **kw)

    router.place_now = spy  # type: ignore[method-assign]
    run(
        env,
        ("POST", "/v1/completions", long, env.auth("a")),
        ("POST", "/v1/completions", long, env.auth("a")),
        ("POST", "/v1/completions", long, env.auth("b")),
    )
    assert seen[0] and seen[0] == seen[1]
    assert not set(seen[0]) & set(seen[2])


def test_routing_override_only_for_admin_or_allowed_tenants(tmp_path: Path) -> None:
    tenants = {"a": {}, "r": {"allow_routing_override": True}, "ops": {"admin": True}}
    env = Env(tmp_path, tenants=tenants)
    h = {"x-shipit-routing": "round_robin"}
    a, r, ops = run(
        env,
        *[("POST", "/v1/chat/completions", CHAT, env.auth(t, **h)) for t in ("a", "r", "ops")],
    )
    assert a.status == 403 and a.json()["error"]["param"] == "x-shipit-routing"
    assert r.status == 200 and ops.status == 200


def test_priority_and_deadline_outside_the_range_are_400_naming_value_and_range(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, tenants={"acme": {"priority_min": 2, "priority_max": 5}})
    cases = [
        ({"x-shipit-priority": "1"}, CHAT, "x-shipit-priority 1 is outside", "[2, 5]"),
        ({"x-shipit-priority": "-99999999999999999999"}, CHAT, "-99999999999999999999", "[2, 5]"),
        ({"x-shipit-priority": "high"}, CHAT, "'high'", "[2, 5]"),
        ({}, {**CHAT, "priority": 9}, "priority 9 is outside", "[2, 5]"),
        ({"x-shipit-deadline-ms": "-5"}, CHAT, "x-shipit-deadline-ms -5", "[1, 86400000]"),
        ({"x-shipit-deadline-ms": "99999999999999999999"}, CHAT, "99999999999999999999", "[1,"),
    ]
    results = run(
        env, *[("POST", "/v1/chat/completions", body, env.auth(**h)) for h, body, _, _ in cases]
    )
    for res, (_, _, value, rng) in zip(results, cases, strict=True):
        assert res.status == 400, res.body
        message = res.json()["error"]["message"]
        assert value in message and rng in message, message
    assert env.replica.bodies == []


def test_a_request_without_priority_gets_the_default_clamped_into_the_tenants_range(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, tenants={"acme": {"priority_min": 3, "priority_max": 5}})
    seen: list[int] = []
    router = env.gw.routers["default"]
    place_now = router.place_now

    def spy(view: Any, **kw: Any) -> Any:
        seen.append(view.priority)
        return place_now(view, **kw)

    router.place_now = spy  # type: ignore[method-assign]
    (res,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert res.status == 200 and seen == [3]


def test_edge_limits_body_size_json_depth_and_huge_integers(tmp_path: Path) -> None:
    env = Env(tmp_path, host="127.0.0.1", gateway={"limits": {"max_body_bytes": 100_000}})
    deep = b'{"model":"m","x":' + b"[" * 40 + b"]" * 40 + b"}"
    deeper = b'{"model":"m","x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # past Python's stack
    huge = b'{"model":"m","messages":[],"max_tokens":' + b"9" * 30 + b"}"
    big = {**CHAT, "pad": "x" * 200_000}
    r413, r_deep, r_deeper, r_huge, r_digits = run(
        env,
        ("POST", "/v1/chat/completions", big, {}),
        ("POST", "/v1/chat/completions", deep, {}),
        ("POST", "/v1/chat/completions", deeper, {}),
        ("POST", "/v1/chat/completions", huge, {}),
        ("POST", "/v1/chat/completions", b'{"model":"m","n":' + b"1" * 9000 + b"}", {}),
    )
    assert r413.status == 413 and r413.json()["error"]["code"] == "request_too_large"
    assert "100000 bytes" in r413.json()["error"]["message"]
    for res in (r_deep, r_deeper):
        assert res.status == 400 and "nested deeper than 32" in res.json()["error"]["message"]
    assert r_huge.status == 400 and r_huge.json()["error"]["param"] == "max_tokens"
    assert r_digits.status == 400
    assert env.replica.bodies == []


def test_a_body_is_refused_as_soon_as_it_grows_past_the_limit(tmp_path: Path) -> None:
    env = Env(tmp_path, host="127.0.0.1", gateway={"limits": {"max_body_bytes": 100}})
    reads = 0

    async def go() -> list[dict[str, Any]]:
        nonlocal reads
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"x" * 60, "more_body": True}  # endless

        async def send(m: dict[str, Any]) -> None:
            sent.append(m)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        async with running(env.gw):
            await env.gw(scope, receive, send)
        return sent

    sent = asyncio.run(go())
    assert sent[0]["status"] == 413 and reads == 2


def test_the_audit_log_names_key_ids_and_tenants_never_keys(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {}, "ops": {"admin": True}})
    run(
        env,
        ("POST", "/v1/chat/completions", CHAT, env.auth()),
        ("GET", "/shipit/status", None, env.auth("ops")),
        ("POST", "/v1/chat/completions", CHAT, {"x-api-key": "sk-shipit-zz-top"}),
    )
    records = env.audit()
    text = env.audit_path.read_text()
    assert all(k not in text for k in env.keys.values())
    assert [r["event"] for r in records] == ["request", "admin", "auth_failed"]
    acme_id = env.store.check(env.keys["acme"]).key_id  # type: ignore[union-attr]
    assert records[0]["key_id"] == acme_id and records[0]["tenant"] == "acme"
    assert records[0]["tokens"] == 50 and records[0]["status"] == 200
    assert records[1]["path"] == "/shipit/status" and records[1]["tenant"] == "ops"


def test_a_spent_budget_survives_a_gateway_restart(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"token_budget": 50}})
    write_key_file(tmp_path / "keys.json", env.kf)
    cfg = env.gw.config

    def gateway() -> Gateway:
        gw = create_gateway(
            cfg,
            clock=env.clock,
            upstream_factory=lambda: env.upstream,
            monitor=False,
            keys=KeyStore.open(tmp_path / "keys.json"),
            audit=AuditLog(None),
        )
        gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
        return gw

    env.gw = gateway()
    (ok,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert ok.status == 200
    assert json.loads((tmp_path / "usage.json").read_text()) == {"tenants": {"acme": 50}}
    env.gw = gateway()  # a restart: a new process reads usage.json
    (refused,) = run(env, ("POST", "/v1/chat/completions", CHAT, env.auth()))
    assert refused.status == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_v1_models_lists_only_what_the_tenant_may_use(tmp_path: Path) -> None:
    env = Env(tmp_path, tenants={"acme": {"models": ("m",)}, "all": {}})
    env.gw.routers["default"].registry.set_adapters("a", ["fr"])
    acme, every = run(
        env, ("GET", "/v1/models", None, env.auth()), ("GET", "/v1/models", None, env.auth("all"))
    )
    assert [m["id"] for m in acme.json()["data"]] == ["m"]
    assert [m["id"] for m in every.json()["data"]] == ["m", "fr"]
    assert acme.headers["content-length"] == str(len(acme.body))


def test_readiness_needs_no_key_and_says_only_whether_it_is_ready(tmp_path: Path) -> None:
    """Probes carry no secret: ``/shipit/ready`` is open like ``/health``, and to anyone it
    answers readiness only (no replica counts, no list of the models served)."""
    env = Env(tmp_path, tenants={"acme": {}, "ops": {"admin": True}})
    ready, unknown, status = run(
        env,
        ("GET", "/shipit/ready", None, {}),
        ("GET", "/shipit/ready?model=nope", None, {}),
        ("GET", "/shipit/status", None, {}),
    )
    assert ready.status == 200 and ready.json() == {"ready": True}
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert "serves" not in unknown.json()["error"]["message"]
    assert status.status == 401  # every other /shipit/* path still needs an admin key
    env.gw.routers["default"].remove_replica("a")
    (down,) = run(env, ("GET", "/shipit/ready", None, {}))
    assert down.status == 503 and down.json()["error"]["code"] == "service_unavailable"
