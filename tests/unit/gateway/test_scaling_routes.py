"""``/shipit/scaling``: a deployment's autoscaler bounds set at run time (what a fleet's control
plane calls after each placement), validated like the config file's, with the reason kept for
``/shipit/status``; unknown deployments and bad bodies are 4xx that say what was wrong."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.static import StaticBackend
from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.gateway import scaling_routes
from shipit.gateway.proxy import Message
from shipit.services.autoscaler import Autoscaler, effective_config
from shipit.services.router import RouterService


def autoscalers() -> dict[str, Autoscaler]:
    cfg = parse_config({"deployments": [{"name": "chat", "replicas": 1}]})
    d = cfg.deployments[0]
    clock = FakeClock(0.0)
    router = RouterService(d, clock=clock)
    fleet = Fleet([d], {"chat": router.registry}, local=FakeBackend(), external=StaticBackend({}))
    config = effective_config(d)
    assert config is not None
    return {"chat": Autoscaler(router, fleet, config, clock=clock)}


async def ask(scalers: dict[str, Autoscaler], method: str, path: str, body: Any = None) -> Any:
    sent: list[Message] = []

    async def send(m: Message) -> None:
        sent.append(m)

    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    await scaling_routes.handle(scalers, method, path, raw, send)
    status = sent[0]["status"]
    return status, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_bounds_are_set_at_run_time_and_shown_with_their_reason() -> None:
    async def go() -> None:
        s = autoscalers()
        assert (s["chat"].config.min_replicas, s["chat"].config.max_replicas) == (1, 1)
        body = {"min_replicas": 2, "max_replicas": 5, "reason": "placement: UTC-5 demand"}
        status, answer = await ask(s, "POST", "/shipit/scaling/chat", body)
        assert status == 200
        assert answer == {
            "chat": {"min_replicas": 2, "max_replicas": 5, "reason": "placement: UTC-5 demand"}
        }
        assert (s["chat"].config.min_replicas, s["chat"].config.max_replicas) == (2, 5)
        assert s["chat"]._wake.is_set()  # acted on at once
        assert s["chat"].status()["bounds_reason"] == "placement: UTC-5 demand"
        status, listed = await ask(s, "GET", "/shipit/scaling")
        assert (status, listed["deployments"]["chat"]["max_replicas"]) == (200, 5)

    asyncio.run(go())


def test_refusals_say_what_was_wrong() -> None:
    async def go() -> None:
        s = autoscalers()
        status, answer = await ask(
            s, "POST", "/shipit/scaling/chat", {"min_replicas": 4, "max_replicas": 2}
        )
        assert status == 400 and "min_replicas (4) must be <= max_replicas (2)" in str(answer)
        status, answer = await ask(
            s, "POST", "/shipit/scaling/chat", {"min_replicas": "1", "max_replicas": 2}
        )
        assert status == 400 and "min_replicas must be a whole number" in str(answer)
        status, answer = await ask(s, "POST", "/shipit/scaling/chat", b"[1]")
        assert status == 400 and "JSON object" in str(answer)
        status, answer = await ask(
            s, "POST", "/shipit/scaling/other", {"min_replicas": 1, "max_replicas": 2}
        )
        assert status == 404 and "autoscaled: chat" in str(answer)
        assert (s["chat"].config.min_replicas, s["chat"].config.max_replicas) == (1, 1)

    asyncio.run(go())
