"""The gateway app driven in-process against scripted replicas (``FakeUpstream``): pass-through,
retries, ejection, mid-stream errors, disconnects, admission, adapters, admin endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def make(
    replicas: dict[str, FakeReplica], **deployment: Any
) -> tuple[Gateway, FakeUpstream, FakeClock]:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    clock = FakeClock()
    gw = create_gateway(cfg, clock=clock, upstream_factory=lambda: upstream, monitor=False)
    router = gw.routers["default"]
    for rid in replicas:
        router.add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
    return gw, upstream, clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_stream_passes_through_chunk_by_chunk_with_route_headers() -> None:
    a = FakeReplica()
    gw, _, _ = make({"a": a})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200 and res.complete
            assert res.chunks == a.chunks  # same chunks, same boundaries
            assert res.headers["x-shipit-replica"] == "a"
            assert res.headers["x-shipit-route"] == "least_outstanding/least_loaded"
            assert gw.routers["default"].registry.get("a").in_flight == 0

    run(go())


@pytest.mark.parametrize("failure", ["connect", "timeout"])
def test_failure_before_first_byte_is_retried_on_another_replica(failure: str) -> None:
    bad, good = FakeReplica(fail=failure), FakeReplica()
    gw, up, _ = make({"a": bad, "b": good}, routing={"policy": "round_robin"})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200 and res.headers["x-shipit-replica"] == "b"
            assert up.opened == ["http://a/v1/chat/completions", "http://b/v1/chat/completions"]
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            assert f'shipit_retries_total{{deployment="default",reason="{failure}"}} 1.0' in metrics

    run(go())


def test_5xx_is_retried_and_the_last_answer_passes_through_when_out_of_attempts() -> None:
    a, b = FakeReplica(status=500, chunks=[b'{"error":"boom"}']), FakeReplica(status=503)
    gw, up, _ = make({"a": a, "b": b}, retries={"max_attempts": 2})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert len(up.opened) == 2
            assert res.status in (500, 503)
            assert res.headers["x-shipit-upstream-status"] == str(res.status)

    run(go())


def test_all_replicas_unreachable_gives_502_naming_the_cause() -> None:
    gw, _, _ = make({"a": FakeReplica(fail="connect")}, retries={"max_attempts": 2})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 502
            assert "injected connect failure" in res.json()["error"]["message"]

    run(go())


def test_consecutive_failures_eject_a_replica() -> None:
    bad, good = FakeReplica(fail="connect"), FakeReplica()
    gw, up, clock = make(
        {"a": bad, "b": good},
        routing={"policy": "round_robin"},
        outlier={"consecutive_failures": 2, "base_ejection_s": 10},
    )

    async def go() -> None:
        async with running(gw):
            for _ in range(4):
                assert (await call(gw, "POST", "/v1/chat/completions", CHAT)).status == 200
            router = gw.routers["default"]
            assert [e.replica_id for e in router.ejections] == ["a"]
            up.opened.clear()
            for _ in range(3):
                await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert all(u.startswith("http://b") for u in up.opened)  # a is out
            clock.advance(10)
            bad.fail = None
            for _ in range(2):
                await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert any(u.startswith("http://a") for u in up.opened)  # a is back

    run(go())


def test_mid_stream_failure_ends_with_an_sse_error_event() -> None:
    gw, _, _ = make({"a": FakeReplica(break_after_chunks=2)})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200 and res.complete
            text = res.body.decode()
            assert '"error"' in text and "failed mid-stream" in text
            assert text.endswith("data: [DONE]\n\n")
            assert gw.routers["default"].registry.get("a").in_flight == 0

    run(go())


def test_client_disconnect_aborts_the_upstream_and_frees_the_slot() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw, _, _ = make({"a": a})

    async def go() -> None:
        async with running(gw):
            leave = asyncio.Event()
            task = asyncio.create_task(
                call(gw, "POST", "/v1/chat/completions", CHAT, disconnect=leave)
            )
            await asyncio.sleep(0.01)
            assert gw.routers["default"].registry.get("a").in_flight == 1
            leave.set()
            await task
            assert a.aborted == 1
            assert gw.routers["default"].registry.get("a").in_flight == 0
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            assert 'status="499"' in metrics

    run(go())


def test_priorities_are_honoured_under_a_full_queue() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw, _, _ = make({"a": a}, queueing={"max_concurrency": 1, "max_queue": 2})

    async def go() -> None:
        async with running(gw):
            first = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT))
            await asyncio.sleep(0.01)
            low = [
                asyncio.create_task(
                    call(
                        gw,
                        "POST",
                        "/v1/chat/completions",
                        {**CHAT, "user": f"low{i}"},
                        headers={"x-shipit-priority": "5"},
                    )
                )
                for i in range(2)
            ]
            await asyncio.sleep(0.01)
            refused = await call(
                gw, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-priority": "5"}
            )
            assert refused.status == 429 and refused.headers["retry-after"] == "1"
            vip = asyncio.create_task(
                call(
                    gw,
                    "POST",
                    "/v1/chat/completions",
                    {**CHAT, "user": "vip"},
                    headers={"x-shipit-priority": "0"},
                )
            )
            await asyncio.sleep(0.01)
            shed = await low[1]  # the newest low-priority request lost its place
            assert shed.status == 429 and shed.headers["retry-after"] == "1"
            assert shed.json()["error"]["message"] == "shed by a higher-priority request"
            hold.set()
            results = await asyncio.gather(first, low[0], vip)
            assert [r.status for r in results] == [200, 200, 200]
            users = list(a.bodies)
            assert b'"vip"' in users[1] and b'"low0"' in users[2]  # vip went before low0

    run(go())


def test_waiters_sharing_a_client_request_id_are_both_served() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    gw, _, _ = make({"a": a}, queueing={"max_concurrency": 1, "queue_timeout_s": 1.0})
    dup = {"x-request-id": "dup"}

    async def go() -> None:
        async with running(gw):
            first = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT))
            await asyncio.sleep(0.01)
            w1 = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT, headers=dup))
            await asyncio.sleep(0.01)
            w2 = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT, headers=dup))
            await asyncio.sleep(0.01)
            hold.set()
            results = await asyncio.gather(first, w1, w2)
            assert [r.status for r in results] == [200, 200, 200]
            assert [r.headers["x-shipit-request-id"] for r in results[1:]] == ["dup", "dup"]

    run(go())


def test_deadline_while_queued_gives_504() -> None:
    hold = asyncio.Event()
    gw, _, _ = make({"a": FakeReplica(hold=hold)}, queueing={"max_concurrency": 1})

    async def go() -> None:
        async with running(gw):
            first = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", CHAT))
            await asyncio.sleep(0.01)
            late = asyncio.create_task(
                call(
                    gw, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-deadline-ms": "20"}
                )
            )
            res = await late
            assert res.status == 504
            hold.set()
            assert (await first).status == 200

    run(go())


@pytest.mark.parametrize(
    ("body", "headers", "field", "code"),
    [
        (b"{not json", {}, "body", "invalid_json"),
        ({"messages": []}, {}, "model", "missing_required_parameter"),
        (CHAT, {"x-shipit-routing": "random"}, "x-shipit-routing", "invalid_value"),
        (CHAT, {"x-shipit-priority": "high"}, "x-shipit-priority", "invalid_value"),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    body: object, headers: dict[str, str], field: str | None, code: str
) -> None:
    gw, _, _ = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", body, headers=headers)
            assert res.status == 400
            assert (res.json()["error"]["param"], res.json()["error"]["code"]) == (field, code)

    run(go())


def test_lora_affinity_loads_the_adapter_once_then_sticks() -> None:
    a, b = FakeReplica(), FakeReplica()
    gw, _, _ = make(
        {"a": a, "b": b},
        routing={"policy": "lora_affinity", "lora_affinity": {"adapters": {"sql": "/p/sql"}}},
    )

    async def go() -> None:
        async with running(gw):
            for _ in range(3):
                res = await call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "sql"})
                assert res.status == 200
            calls = a.admin_calls + b.admin_calls
            assert calls == [(calls[0][0], {"lora_name": "sql", "lora_path": "/p/sql"})] and calls[
                0
            ][0].endswith("/v1/load_lora_adapter")
            holder = a if a.admin_calls else b
            assert len(holder.bodies) == 3
            models = (await call(gw, "GET", "/v1/models")).json()
            assert {m["id"] for m in models["data"]} == {"m", "sql"}

    run(go())


def test_lora_affinity_loads_the_adapter_again_after_the_replica_restarts() -> None:
    a = FakeReplica()
    gw, _, _ = make(
        {"a": a},
        routing={"policy": "lora_affinity", "lora_affinity": {"adapters": {"sql": "/p/sql"}}},
    )
    sql = {**CHAT, "model": "sql"}

    def loads() -> int:
        return sum(1 for url, _ in a.admin_calls if url.endswith("/v1/load_lora_adapter"))

    async def go() -> None:
        async with running(gw):
            monitor = gw.monitors["default"]
            assert (await call(gw, "POST", "/v1/chat/completions", sql)).status == 200
            assert loads() == 1
            a.health_status = 503  # the replica restarts and comes back without its adapters
            await monitor.tick()
            a.models.clear()
            a.health_status = 200
            await monitor.tick()
            assert gw.routers["default"].registry.get("a").adapters == frozenset()
            res = await call(gw, "POST", "/v1/chat/completions", sql)
            assert res.status == 200 and res.headers["x-shipit-route"].endswith("adapter_load")
            assert loads() == 2 and a.models == ["sql"]

    run(go())


def test_lora_affinity_answers_404_for_an_unknown_model_and_ejects_nothing() -> None:
    gw, up, _ = make({"a": FakeReplica(), "b": FakeReplica()}, routing={"policy": "lora_affinity"})

    async def go() -> None:
        async with running(gw):
            for _ in range(3):
                res = await call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "m-typo"})
                assert res.status == 404
            err = res.json()["error"]
            assert (err["param"], err["code"], err["type"]) == (
                "model",
                "model_not_found",
                "not_found_error",
            )
            assert up.opened == [] and gw.routers["default"].ejections == []

    run(go())


class _RefusingLoads(FakeUpstream):
    """Every ``/v1/load_lora_adapter`` is answered 400 (a bad adapter path, say)."""

    async def post_json(self, url: str, payload: object, *, timeout_s: float) -> tuple[int, bytes]:
        await super().post_json(url, payload, timeout_s=timeout_s)
        return 400, b"no such adapter directory"


def test_an_adapter_that_fails_to_load_is_not_retried_and_ejects_nothing() -> None:
    a, b = FakeReplica(), FakeReplica()
    cfg = parse_config(
        {
            "deployments": [
                {
                    "model": "m",
                    "replicas": 0,
                    "routing": {
                        "policy": "lora_affinity",
                        "lora_affinity": {"adapters": {"sql": "/bad/sql"}},
                    },
                }
            ]
        }
    )
    up = _RefusingLoads({"http://a": a, "http://b": b})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: up, monitor=False)
    router = gw.routers["default"]
    for rid in ("a", "b"):
        router.add_replica(rid, f"http://{rid}", state=ReplicaState.READY)

    async def go() -> None:
        async with running(gw):
            for _ in range(3):
                res = await call(gw, "POST", "/v1/chat/completions", {**CHAT, "model": "sql"})
                assert res.status == 502 and "no such adapter directory" in res.body.decode()
            assert len(a.admin_calls) + len(b.admin_calls) == 3  # one load per request
            assert router.ejections == [] and up.opened == []
            assert all(r.in_flight == 0 and not r.adapters for r in router.registry.records())

    run(go())


def test_prefix_cache_routes_a_repeated_prefix_to_the_same_replica() -> None:
    gw, _, _ = make(
        {"a": FakeReplica(), "b": FakeReplica(), "c": FakeReplica()},
        routing={"policy": "prefix_cache"},
    )
    system = "You are a careful assistant. " * 40

    async def go() -> None:
        async with running(gw):
            seen = set()
            for i in range(5):
                body = {
                    **CHAT,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"q{i}"},
                    ],
                }
                res = await call(gw, "POST", "/v1/chat/completions", body)
                seen.add(res.headers["x-shipit-replica"])
                if i:
                    assert res.headers["x-shipit-route"] == "prefix_cache/prefix_hit"
            assert len(seen) == 1

    run(go())


def test_admin_endpoints() -> None:
    gw, _, _ = make({"a": FakeReplica()})

    async def go() -> None:
        async with running(gw):
            assert (await call(gw, "GET", "/health")).status == 200
            gw.routers["default"].set_state("a", ReplicaState.UNHEALTHY)
            assert (await call(gw, "GET", "/health")).status == 503
            status = (await call(gw, "GET", "/shipit/status")).json()
            assert status["deployments"][0]["replicas"][0]["state"] == "unhealthy"
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            for name in ("shipit_queue_depth", "shipit_replica_in_flight", "shipit_replica_state"):
                assert name in metrics
            assert (await call(gw, "GET", "/nope")).status == 404

    run(go())
