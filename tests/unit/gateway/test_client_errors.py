"""A replica's 4xx is the client's fault: relayed as is, never retried on another replica,
never withdrawn from the retry budget, never counted toward outlier ejection (nor does it
reset a failure streak). A 5xx keeps being retried."""

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

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
BAD = b'{"error": {"message": "max_tokens must be positive", "type": "BadRequestError"}}'


def make(replicas: dict[str, FakeReplica], **deployment: Any) -> tuple[Gateway, FakeUpstream]:
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
    upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    for rid in replicas:
        gw.routers["default"].add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
    return gw, upstream


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_replica_4xx_is_relayed_as_is_and_not_retried(status: int) -> None:
    a, b = FakeReplica(status=status, chunks=[BAD]), FakeReplica()
    gw, up = make(
        {"a": a, "b": b},
        routing={"policy": "round_robin"},
        outlier={"consecutive_failures": 1, "max_ejected_fraction": 1.0},
    )

    async def go() -> None:
        async with running(gw):
            router = gw.routers["default"]
            full = router.budget.balance
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == status and res.body == BAD
            assert res.headers["x-shipit-upstream-status"] == str(status)
            assert res.headers["x-shipit-replica"] == "a"
            assert up.opened == ["http://a/v1/chat/completions"]  # b never tried
            assert router.budget.balance == full  # nothing withdrawn
            assert router.ejections == []  # one failure would have ejected a
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            assert "shipit_retries_total{" not in metrics

    asyncio.run(go())


def test_a_4xx_does_not_reset_a_failure_streak() -> None:
    a = FakeReplica()
    gw, _ = make(
        {"a": a},
        retries={"max_attempts": 1},
        outlier={"consecutive_failures": 2, "max_ejected_fraction": 1.0},
    )

    async def go() -> None:
        async with running(gw):
            a.fail = "connect"
            assert (await call(gw, "POST", "/v1/chat/completions", CHAT)).status == 502
            a.fail, a.status, a.chunks = None, 400, [BAD]
            assert (await call(gw, "POST", "/v1/chat/completions", CHAT)).status == 400
            a.fail = "connect"
            assert (await call(gw, "POST", "/v1/chat/completions", CHAT)).status == 502
            assert [e.replica_id for e in gw.routers["default"].ejections] == ["a"]

    asyncio.run(go())


def test_a_5xx_is_still_retried_on_another_replica() -> None:
    a, b = FakeReplica(status=500, chunks=[b'{"error": "boom"}']), FakeReplica()
    gw, up = make({"a": a, "b": b}, routing={"policy": "round_robin"})

    async def go() -> None:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", CHAT)
            assert res.status == 200 and res.headers["x-shipit-replica"] == "b"
            assert len(up.opened) == 2

    asyncio.run(go())
