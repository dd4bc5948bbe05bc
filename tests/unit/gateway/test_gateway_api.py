"""The gateway's OpenAI surface, in-process against scripted replicas: the route table (404,
405 with ``Allow``), one error vocabulary, edge validation, models and model cards, readiness
(``/v1/models`` and ``/shipit/ready``), and ``/tokenize`` / ``/detokenize`` relayed to a replica
of the named model. Every error body is checked against OpenAI's published schema."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shipit.config.gateway import parse_config
from shipit.core import openai_errors as oe
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import Result, call
from support.openai_schema import errors

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": USER}
CODES = {k.code: k for k in oe.VOCABULARY}


def make(
    replicas: dict[str, FakeReplica],
    *,
    deployments: list[dict[str, Any]] | None = None,
    ready: bool = True,
) -> tuple[Gateway, FakeUpstream]:
    """One deployment ``default`` of model ``m`` (or ``deployments``); replica ``x`` of
    deployment ``d`` is named ``d-x`` when there are several."""
    deps = deployments or [{"name": "default", "model": "m", "replicas": 0}]
    cfg = parse_config({"deployments": deps})
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    state = ReplicaState.READY if ready else ReplicaState.STARTING
    for rid in replicas:
        dep = rid.split("-", 1)[0] if len(deps) > 1 else "default"
        gw.routers[dep].add_replica(rid, f"http://{rid}", state=state)
    return gw, upstream


def vocabulary_error(res: Result, status: int, code: str) -> dict[str, Any]:
    """The response is OpenAI's error shape with this status and vocabulary code."""
    assert res.status == status, res.body
    problems = errors("ErrorResponse", res.json())
    assert not problems, problems
    err: dict[str, Any] = res.json()["error"]
    assert err["code"] == code and CODES[code].status == status
    assert err["type"] == CODES[code].type
    return err


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----- the route table --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/completions", "POST"),
        ("GET", "/tokenize", "POST"),
        ("DELETE", "/detokenize", "POST"),
        ("POST", "/v1/models", "GET, HEAD"),
        ("POST", "/v1/models/m", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/shipit/ready", "GET, HEAD"),
    ],
)
def test_a_wrong_method_on_a_served_path_is_405_with_allow(
    method: str, path: str, allow: str
) -> None:
    gw, up = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, method, path)  # no body: the method alone decides
            err = vocabulary_error(res, 405, "method_not_allowed")
            assert res.headers["allow"] == allow and method in err["message"]
            assert up.opened == []

    run(go())


def test_an_unknown_path_is_404_and_head_answers_a_get_without_a_body() -> None:
    gw, _ = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            err = vocabulary_error(await call(gw, "GET", "/v1/nothing"), 404, "not_found")
            assert "/v1/nothing" in err["message"]
            head = await call(gw, "HEAD", "/v1/models")
            assert head.status == 200 and head.body == b""
            assert head.headers["content-type"] == "application/json"

    run(go())


# ----- models -------------------------------------------------------------------------------------
def test_models_lists_a_model_only_once_a_replica_of_it_is_ready() -> None:
    gw, _ = make({"a": FakeReplica()}, ready=False)

    async def go() -> None:
        async with running(gw):
            listed = await call(gw, "GET", "/v1/models")
            assert listed.json() == {"object": "list", "data": []}
            res = await call(gw, "GET", "/v1/models/m")
            err = vocabulary_error(res, 503, "service_unavailable")
            assert "0 of 1 replica(s) ready (1 starting)" in err["message"]
            assert res.headers["retry-after"] == "1"
            gw.routers["default"].set_state("a", ReplicaState.READY)
            listed = await call(gw, "GET", "/v1/models")
            assert [m["id"] for m in listed.json()["data"]] == ["m"]
            assert not errors("ListModelsResponse", listed.json())

    run(go())


def test_a_model_scaled_to_zero_is_listed_since_a_request_starts_a_replica() -> None:
    dep = {"name": "z", "model": "m", "replicas": 0}
    dep["autoscaling"] = {"min_replicas": 0, "max_replicas": 2}
    gw, _ = make({}, deployments=[dep])

    async def go() -> None:
        async with running(gw):
            listed = (await call(gw, "GET", "/v1/models")).json()
            assert [m["id"] for m in listed["data"]] == ["m"]

    run(go())


def test_models_retrieve_serves_base_models_and_adapters_and_404s_the_rest() -> None:
    a = FakeReplica(models=["sql-lora"])
    gw, _ = make({"a": a})

    async def go() -> None:
        async with running(gw):
            gw.routers["default"].registry.set_adapters("a", ["sql-lora"])
            listed = (await call(gw, "GET", "/v1/models")).json()
            assert [(m["id"], m["parent"]) for m in listed["data"]] == [
                ("m", None),
                ("sql-lora", "m"),
            ]
            for card in listed["data"]:
                one = await call(gw, "GET", f"/v1/models/{card['id']}")
                assert one.status == 200 and one.json() == card
                assert not errors("Model", one.json())
            missing = await call(gw, "GET", "/v1/models/gpt-4")
            err = vocabulary_error(missing, 404, "model_not_found")
            assert err["param"] == "model"
            assert "`gpt-4` does not exist" in err["message"] and "m, sql-lora" in err["message"]

    run(go())


def test_served_names_pick_the_deployment_everywhere() -> None:
    deps = [
        {"name": "small", "model": "/models/a", "served_model_name": "smollm2-135m-instruct"},
        {"name": "big", "model": "llama"},
    ]
    for d in deps:
        d["replicas"] = 0
    small, big = FakeReplica(), FakeReplica()
    gw, up = make({"small-a": small, "big-a": big}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            body = {"model": "smollm2-135m-instruct", "messages": USER}
            assert (await call(gw, "POST", "/v1/chat/completions", body)).status == 200
            tok = {"model": "smollm2-135m-instruct", "prompt": "hello"}
            assert (await call(gw, "POST", "/tokenize", tok)).status == 200
            assert up.opened == ["http://small-a/v1/chat/completions", "http://small-a/tokenize"]
            card = await call(gw, "GET", "/v1/models/smollm2-135m-instruct")
            assert card.status == 200 and card.json()["id"] == "smollm2-135m-instruct"
            ready = await call(gw, "GET", "/shipit/ready?model=smollm2-135m-instruct")
            assert ready.status == 200
            # the path the replicas load from is not a name clients use
            res = await call(gw, "POST", "/v1/chat/completions", {**body, "model": "/models/a"})
            err = vocabulary_error(res, 404, "model_not_found")
            assert "smollm2-135m-instruct, llama" in err["message"]

    run(go())


# ----- unknown models -----------------------------------------------------------------------------
def test_an_unknown_model_is_a_404_from_the_gateway_naming_it_and_the_served_ones() -> None:
    gw, up = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "gpt-4o"})
            err = vocabulary_error(res, 404, "model_not_found")
            assert err["param"] == "model" and "`gpt-4o`" in err["message"]
            assert "this gateway serves m" in err["message"]
            assert "replica" not in err["message"].split("(")[0]
            assert up.opened == []

    run(go())


def test_before_any_replica_is_ready_an_unknown_name_waits_for_the_replica_to_answer() -> None:
    """Adapters a replica loads at start are unknown until it has been ready once."""
    a = FakeReplica(status=404, chunks=[b'{"error": {}}'])
    gw, up = make({"a": a}, ready=False)

    async def go() -> None:
        async with running(gw):
            pending = asyncio.create_task(
                call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "start-lora"})
            )
            await asyncio.sleep(0.01)
            assert not pending.done()  # held for the cold start, not refused
            gw.routers["default"].set_state("a", ReplicaState.READY)
            assert (await pending).status == 404
            assert up.opened == ["http://a/v1/chat/completions"]

    run(go())


# ----- edge validation ----------------------------------------------------------------------------
BAD = [
    ("/v1/chat/completions", b"[1, 2]", "body", "invalid_json"),
    ("/v1/chat/completions", b"{", "body", "invalid_json"),
    ("/v1/chat/completions", {"messages": USER}, "model", "missing_required_parameter"),
    ("/v1/chat/completions", {"model": 7, "messages": USER}, "model", "invalid_type"),
    ("/v1/chat/completions", {"model": "", "messages": USER}, "model", "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream", "invalid_type"),
    ("/v1/chat/completions", {**CHAT, "stream": 1}, "stream", "invalid_type"),
    ("/v1/chat/completions", {**CHAT, "stream_options": True}, "stream_options", "invalid_type"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": "5"}, "max_tokens", "invalid_type"),
    ("/v1/chat/completions", {**CHAT, "priority": 1.5}, "priority", "invalid_type"),
    ("/v1/chat/completions", {**CHAT, "user": 42}, "user", "invalid_type"),
    ("/v1/chat/completions", {"model": "m"}, "messages", "missing_required_parameter"),
    ("/v1/chat/completions", {"model": "m", "messages": "hi"}, "messages", "invalid_type"),
    ("/v1/chat/completions", {"model": "m", "messages": ["hi"]}, "messages", "invalid_type"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"content": "hi"}]}, "messages",
     "missing_required_parameter"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
     "messages", "invalid_value"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": 3, "content": "x"}]},
     "messages", "invalid_type"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": None}]},
     "messages", "invalid_type"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user"}]}, "messages",
     "missing_required_parameter"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [1]}]},
     "messages", "invalid_type"),
    ("/v1/completions", {"model": "m"}, "prompt", "missing_required_parameter"),
    ("/v1/completions", {"model": "m", "prompt": {"text": "hi"}}, "prompt", "invalid_type"),
    ("/v1/completions", {"model": "m", "prompt": ["a", 1]}, "prompt", "invalid_type"),
    ("/tokenize", b"nope", "body", "invalid_json"),
    ("/tokenize", {"model": 1, "prompt": "x"}, "model", "invalid_type"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param", "code"), BAD)
def test_a_malformed_body_is_a_400_in_openai_shape_before_any_replica_sees_it(
    path: str, body: object, param: str | None, code: str
) -> None:
    gw, up = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            err = vocabulary_error(await call(gw, "POST", path, body), 400, code)
            assert err["param"] == param
            assert up.opened == []

    run(go())


def test_bodies_the_gateway_reads_and_accepts_go_through_unchanged() -> None:
    a = FakeReplica(chunks=[b'{"ok": true}'])
    gw, _ = make({"a": a})
    good = [
        {**CHAT, "stream": None, "max_tokens": None, "user": "u1"},
        {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": []}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
    ]

    async def go() -> None:
        async with running(gw):
            for body in good:
                assert (await call(gw, "POST", "/v1/chat/completions", body)).status == 200
            for prompt in ("x", ["a", "b"], [1, 2], [[1], [2, 3]]):
                body = {"model": "m", "prompt": prompt}
                assert (await call(gw, "POST", "/v1/completions", body)).status == 200
            assert [json.loads(b) for b in a.bodies[:3]] == good

    run(go())


# ----- admission refusals -------------------------------------------------------------------------
def test_admission_refusals_use_the_vocabulary() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    deps = [
        {
            "name": "default",
            "model": "m",
            "replicas": 0,
            "queueing": {"max_concurrency": 1, "max_queue": 1, "queue_timeout_s": 0.05},
        }
    ]
    gw, _ = make({"a": a}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            first = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT))
            await asyncio.sleep(0.01)
            second = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT))
            await asyncio.sleep(0.01)
            full = await call(gw, "POST", "/v1/chat/completions", CHAT)
            vocabulary_error(full, 429, "queue_full")
            assert full.headers["retry-after"] == "1"
            vocabulary_error(await second, 504, "timeout")
            hold.set()
            assert (await first).status == 200

    run(go())


def test_every_attempt_failing_is_a_502_upstream_error() -> None:
    gw, _ = make({"a": FakeReplica(fail="connect")})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            err = vocabulary_error(res, 502, "upstream_error")
            assert "injected connect failure" in err["message"]

    run(go())


# ----- readiness ----------------------------------------------------------------------------------
def test_ready_answers_503_until_a_replica_is_ready_and_waits_when_asked() -> None:
    gw, _ = make({"a": FakeReplica()}, ready=False)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "GET", "/shipit/ready")
            err = vocabulary_error(res, 503, "service_unavailable")
            assert "m: 0 of 1 replica(s) ready (1 starting)" in err["message"]
            assert res.headers["retry-after"] == "1"
            waiting = asyncio.create_task(call(gw, "GET", "/shipit/ready?model=m&wait_s=30"))
            await asyncio.sleep(0.01)
            assert not waiting.done()
            gw.routers["default"].set_state("a", ReplicaState.READY)
            res = await waiting
            assert res.status == 200 and res.json() == {"ready": True, "ready_replicas": {"m": 1}}

    run(go())


def test_ready_gives_up_after_wait_s() -> None:
    gw, _ = make({"a": FakeReplica()}, ready=False)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "GET", "/shipit/ready?wait_s=0.05")
            err = vocabulary_error(res, 503, "service_unavailable")
            assert err["message"].startswith("not ready after 0.05 s")

    run(go())


def test_ready_for_one_model_ignores_the_others() -> None:
    deps = [{"name": "one", "model": "m1"}, {"name": "two", "model": "m2"}]
    for d in deps:
        d["replicas"] = 0
    gw, _ = make({"one-a": FakeReplica()}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            assert (await call(gw, "GET", "/shipit/ready?model=m1")).status == 200
            assert (await call(gw, "GET", "/shipit/ready?model=m2")).status == 503
            assert (await call(gw, "GET", "/shipit/ready")).status == 503
            listed = (await call(gw, "GET", "/v1/models")).json()
            assert [m["id"] for m in listed["data"]] == ["m1"]

    run(go())


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("wait_s=soon", 400, "invalid_value"),
        ("wait_s=-1", 400, "invalid_value"),
        ("wait_s=601", 400, "invalid_value"),
        ("model=nope", 404, "model_not_found"),
    ],
)
def test_ready_refuses_bad_queries(query: str, status: int, code: str) -> None:
    gw, _ = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            vocabulary_error(await call(gw, "GET", f"/shipit/ready?{query}"), status, code)

    run(go())


# ----- tokenizer endpoints ------------------------------------------------------------------------
def test_tokenize_and_detokenize_go_to_a_replica_of_the_named_model() -> None:
    one = FakeReplica(chunks=[b'{"tokens": [1, 2], "count": 2}'])
    two = FakeReplica(chunks=[b'{"prompt": "hi"}'])
    deps = [{"name": "one", "model": "m1"}, {"name": "two", "model": "m2"}]
    for d in deps:
        d["replicas"] = 0
    gw, up = make({"one-a": one, "two-a": two}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/tokenize", {"model": "m1", "prompt": "hi"})
            assert res.status == 200 and res.json() == {"tokens": [1, 2], "count": 2}
            assert res.headers["x-shipit-replica"] == "one-a"
            res = await call(gw, "POST", "/detokenize", {"model": "m2", "tokens": [1, 2]})
            assert res.status == 200 and res.json() == {"prompt": "hi"}
            assert up.opened == ["http://one-a/tokenize", "http://two-a/detokenize"]
            assert json.loads(two.bodies[0]) == {"model": "m2", "tokens": [1, 2]}
            res = await call(gw, "POST", "/tokenize", {"prompt": "hi"})
            err = vocabulary_error(res, 400, "missing_required_parameter")
            assert "m1, m2" in err["message"]
            res = await call(gw, "POST", "/tokenize", {"model": "m3", "prompt": "hi"})
            vocabulary_error(res, 404, "model_not_found")
            for r in gw.routers.values():
                assert all(rec.in_flight == 0 for rec in r.registry.records())

    run(go())


def test_tokenize_without_a_model_goes_to_the_only_deployment_and_retries_a_failure() -> None:
    bad, good = FakeReplica(fail="connect"), FakeReplica(chunks=[b'{"tokens": []}'])
    deps = [{"name": "default", "model": "m", "replicas": 0, "routing": {"policy": "round_robin"}}]
    gw, up = make({"a": bad, "b": good}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/tokenize", {"prompt": "hi"})
            assert res.status == 200 and res.headers["x-shipit-replica"] == "b"
            assert up.opened == ["http://a/tokenize", "http://b/tokenize"]
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            assert 'shipit_requests_total{deployment="default"' not in metrics

    run(go())


def test_tokenize_carries_the_upstream_credentials_and_a_4xx_is_not_retried() -> None:
    a = FakeReplica(status=400, chunks=[b'{"error": {"code": "invalid_value"}}'])
    b = FakeReplica()
    auth = {"headers": {"x-api-key": "sekrit"}}
    deps = [
        {
            "name": "default",
            "model": "m",
            "replicas": 0,
            "routing": {"policy": "round_robin"},
            "upstream_auth": auth,
        }
    ]
    gw, up = make({"a": a, "b": b}, deployments=deps)

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/tokenize", {"model": "m", "prompt": "x"})
            assert res.status == 400 and res.json() == {"error": {"code": "invalid_value"}}
            assert up.opened == ["http://a/tokenize"]  # the client's error: not retried
            assert a.headers[0]["x-api-key"] == "sekrit"
            assert gw.routers["default"].ejections == []

    run(go())


def test_servers_that_guess_the_asgi_version_take_the_gateway_for_asgi_3() -> None:
    """uvicorn's command line (and hypercorn) tell ASGI 2 from 3 by whether ``__call__`` is a
    coroutine function: a gateway served by one must read as ASGI 3, or every request fails."""
    import uvicorn

    gw, _ = make({})
    config = uvicorn.Config(gw, proxy_headers=False)
    config.load()
    assert config.interface == "asgi3"
