"""``RequestCore.run`` driven directly, no ASGI: the events of one request against scripted
replicas (success, retry with exclusion, held then started, rejected, broken mid-stream, a
replica's 4xx relayed as is) and closing the iterator midway (the slot comes back, the upstream
is aborted)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shipit.config.gateway import parse_config
from shipit.config.upstream_auth import UpstreamHeaders
from shipit.core.clock import Clock, FakeClock, RealClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.parse import parse_request
from shipit.gateway.request_core import (
    HELD,
    BrokenMidStream,
    Event,
    Failed,
    Finished,
    Held,
    Rejected,
    RequestCore,
    Started,
)
from shipit.services.monitor import AdapterLoader
from shipit.services.router import RouterService
from shipit.services.upstream import MidStreamError
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Rig:
    def __init__(
        self,
        replicas: dict[str, FakeReplica],
        *,
        clock: Clock | None = None,
        ready: bool = True,
        auth: UpstreamHeaders | None = None,
        **deployment: Any,
    ) -> None:
        cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
        self.dep = cfg.deployments[0]
        self.clock = clock or FakeClock()
        self.router = RouterService(self.dep, clock=self.clock)
        self.upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
        self.metrics = GatewayMetrics({"default": self.router})
        self.core = RequestCore(
            metrics=self.metrics,
            upstream=lambda: self.upstream,
            adapters=lambda: AdapterLoader(self.upstream, {}),
            now=self.clock.now,
            upstream_headers={"default": auth} if auth is not None else None,
        )
        if ready:
            for rid in replicas:
                self.router.add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
        else:  # the test plays the autoscaler (it adds the replica): something can start one
            self.router.cold_listeners.append(lambda: None)
        self.ids = 0

    def view(self, body: dict[str, Any] | None = None) -> RequestView:
        self.ids += 1
        return parse_request(
            request_id=f"r{self.ids}",
            client_request_id=None,
            path="/v1/chat/completions",
            headers={},
            body=json.dumps(body or CHAT).encode(),
            deployments={"default": self.dep},
            adapters={"default": set()},
            now_s=self.clock.now(),
        )

    async def events(self, body: dict[str, Any] | None = None) -> list[Event]:
        view = self.view(body)
        self.router.on_request()
        raw = json.dumps(body or CHAT).encode()
        return [ev async for ev in self.core.run(view, raw, self.router)]

    def metric(self, needle: str) -> list[str]:
        return [line for line in self.metrics.render().decode().splitlines() if needle in line]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_success_is_started_then_the_chunks_unchanged_then_finished() -> None:
    a = FakeReplica()
    rig = Rig({"a": a})
    events = run(rig.events())
    started, *chunks, finished = events
    assert isinstance(started, Started) and started.status == 200
    headers = dict(started.headers)
    assert headers[b"x-shipit-replica"] == b"a"
    assert headers[b"x-shipit-route"] == b"least_outstanding/least_loaded"
    assert headers[b"content-type"] == b"text/event-stream"
    assert b"x-shipit-upstream-status" not in headers
    assert chunks == a.chunks  # raw bytes, same boundaries
    assert finished == Finished(200, "least_outstanding", "a", "ok", 1, None, 1)
    assert rig.router.registry.get("a").in_flight == 0


def test_a_failure_before_the_first_byte_is_retried_on_another_replica_excluding_it() -> None:
    bad, good = FakeReplica(fail="connect"), FakeReplica()
    rig = Rig({"a": bad, "b": good})
    rig.router.registry.take_slot("b")  # b is busier: least_outstanding prefers a, twice
    events = run(rig.events())
    assert rig.upstream.opened == ["http://a/v1/chat/completions", "http://b/v1/chat/completions"]
    started, finished = events[0], events[-1]
    assert isinstance(started, Started) and dict(started.headers)[b"x-shipit-replica"] == b"b"
    assert isinstance(finished, Finished)
    assert (finished.status, finished.replica_id, finished.attempts) == (200, "b", 2)
    assert rig.metric('shipit_retries_total{deployment="default",reason="connect"} 1.0')
    assert rig.router.registry.get("a").in_flight == 0
    assert rig.router.registry.get("b").in_flight == 1  # the slot taken above, only


def test_out_of_attempts_is_failed_with_an_openai_error() -> None:
    rig = Rig({"a": FakeReplica(fail="timeout")}, retries={"max_attempts": 1})
    failed, finished = run(rig.events())
    assert isinstance(failed, Failed) and failed.status == 504 and failed.replica_id == "a"
    err = json.loads(failed.body)["error"]
    assert (err["type"], err["code"]) == ("server_error", "timeout")
    assert "failed after 1 attempt(s)" in err["message"]
    assert finished == Finished(504, "least_outstanding", "a", "failed", 1)


def test_held_while_no_replica_is_ready_then_started() -> None:
    a = FakeReplica()
    rig = Rig(
        {"a": a},
        clock=RealClock(),
        ready=False,
        queueing={"cold_start_keepalive_s": 0.01, "cold_start_hold_s": 30},
    )

    async def go() -> list[Event]:
        async def ready_later() -> None:
            await asyncio.sleep(0.1)
            rig.router.add_replica("a", "http://a", state=ReplicaState.READY)

        later = asyncio.ensure_future(ready_later())
        events = await rig.events()
        await later
        return events

    events = run(go())
    held = [ev for ev in events if isinstance(ev, Held)]
    assert held and events[: len(held)] == held and held[0] is HELD
    started = events[len(held)]
    assert isinstance(started, Started) and started.status == 200
    assert events[len(held) + 1 : -1] == a.chunks
    assert isinstance(events[-1], Finished) and events[-1].outcome == "ok"


def test_rejected_when_the_queue_is_full_carries_retry_after_and_opens_nothing() -> None:
    rig = Rig({"a": FakeReplica()}, queueing={"max_concurrency": 1, "max_queue": 0})
    rig.router.registry.take_slot("a")
    rejected, finished = run(rig.events())
    assert isinstance(rejected, Rejected)
    assert (rejected.status, rejected.retry_after_s) == (429, 1)
    error = json.loads(rejected.body)["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
    assert finished == Finished(429, outcome="rejected", attempts=1)
    assert rig.upstream.opened == []


def test_broken_mid_stream_ends_with_the_error_and_frees_the_slot() -> None:
    a = FakeReplica(break_after_chunks=2)
    rig = Rig({"a": a})
    events = run(rig.events())
    assert isinstance(events[0], Started)
    assert events[1:3] == a.chunks[:2]
    broken, finished = events[3:]
    assert isinstance(broken, BrokenMidStream) and broken.replica_id == "a"
    assert "failed mid-stream" in json.loads(broken.body)["error"]["message"]
    assert finished == Finished(502, "least_outstanding", "a", "failed", 1)
    assert rig.router.registry.get("a").in_flight == 0
    assert rig.metric('shipit_midstream_errors_total{deployment="default"} 1.0')


def test_a_first_token_before_a_break_is_told_to_the_router_before_the_slot_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The router hears of the first token after it was written (a callback); a stream that
    breaks in the same read, before that callback ran, still tells the router (the prompt off
    the pace book) before releasing its slot."""
    from shipit.services import upstream_fake

    async def at_once(self: Any) -> AsyncIterator[bytes]:  # no loop turn between the chunks
        r = self._replica
        for i, chunk in enumerate(r.chunks):
            if i >= r.break_after_chunks:
                raise MidStreamError("ServerDisconnectedError: the replica went away")
            yield chunk

    monkeypatch.setattr(upstream_fake._FakeResponse, "chunks", at_once)
    a = FakeReplica(break_after_chunks=2)  # the second chunk holds the first token
    rig = Rig({"a": a})
    calls: list[str] = []
    first_token, release = rig.router.first_token, rig.router.release

    def told(lease: Any, at_s: float | None = None) -> None:
        calls.append(f"told {'prefilled' if lease.prefilled else 'pending'}")
        first_token(lease, at_s)

    def released(lease: Any, **kw: Any) -> Any:
        calls.append(f"release {kw['outcome']}")
        return release(lease, **kw)

    rig.router.first_token = told  # type: ignore[method-assign]
    rig.router.release = released  # type: ignore[method-assign]
    events = run(rig.events())
    assert isinstance(events[-2], BrokenMidStream)
    assert calls[:2] == ["told pending", "release failed"]


def test_aclose_after_the_first_chunk_aborts_the_upstream_and_frees_the_slot() -> None:
    a = FakeReplica()
    rig = Rig({"a": a})

    async def go() -> None:
        view = rig.view()
        events = rig.core.run(view, b"{}", rig.router)
        assert isinstance(await anext(events), Started)
        assert await anext(events) == a.chunks[0]
        assert rig.router.registry.get("a").in_flight == 1
        await events.aclose()
        assert a.aborted == 1
        assert rig.router.registry.get("a").in_flight == 0
        assert rig.router.ejections == []

    run(go())


def test_aclose_while_held_forgets_the_waiter() -> None:
    rig = Rig(
        {"a": FakeReplica()},
        clock=RealClock(),
        ready=False,
        queueing={"cold_start_keepalive_s": 0.01, "cold_start_hold_s": 30},
    )

    async def go() -> None:
        events = rig.core.run(rig.view(), b"{}", rig.router)
        assert await anext(events) is HELD
        assert rig.router.queued() == 1
        await events.aclose()
        await asyncio.sleep(0)  # the cancelled acquire runs its clean-up
        assert rig.router.queued() == 0
        rig.router.add_replica("a", "http://a", state=ReplicaState.READY)
        assert rig.router.registry.get("a").in_flight == 0  # nobody took the slot

    run(go())


def test_cancelling_the_consumer_mid_answer_frees_the_slot() -> None:
    hold = asyncio.Event()
    a = FakeReplica(hold=hold)
    rig = Rig({"a": a})

    async def go() -> None:
        from contextlib import aclosing

        async def consume() -> None:
            async with aclosing(rig.core.run(rig.view(), b"{}", rig.router)) as events:
                async for _ in events:
                    pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        assert rig.router.registry.get("a").in_flight == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert a.aborted == 1 and rig.router.registry.get("a").in_flight == 0

    run(go())


def test_upstream_headers_ride_on_every_request_to_the_deployment() -> None:
    auth = UpstreamHeaders({"authorization": "Bearer s3cret", "x-team": "search"})
    a, b = FakeReplica(fail="connect"), FakeReplica()
    rig = Rig({"a": a, "b": b}, auth=auth)
    run(rig.events())
    assert len(a.headers) == 1 and len(b.headers) == 1  # the retry too
    for sent in a.headers + b.headers:
        assert sent["authorization"] == "Bearer s3cret" and sent["x-team"] == "search"
        assert sent["content-type"] == "application/json" and sent["x-request-id"]
    assert "s3cret" not in repr(auth) and "s3cret" not in str(rig.core.__dict__)


def test_held_then_a_replica_4xx_is_failed_with_its_answer_and_not_retried() -> None:
    answer = b'{"error": {"message": "bad max_tokens"}}'
    a = FakeReplica(status=400, chunks=[answer])
    rig = Rig(
        {"a": a},
        clock=RealClock(),
        ready=False,
        queueing={"cold_start_keepalive_s": 0.01, "cold_start_hold_s": 30},
    )

    async def go() -> list[Event]:
        async def ready_later() -> None:
            await asyncio.sleep(0.05)
            rig.router.add_replica("a", "http://a", state=ReplicaState.READY)

        later = asyncio.ensure_future(ready_later())
        events = await rig.events()
        await later
        return events

    events = run(go())
    *held, failed, finished = events
    assert held and all(ev is HELD for ev in held)
    assert failed == Failed(400, answer, "a")
    assert isinstance(finished, Finished) and finished.outcome == "client_error"
    assert len(a.bodies) == 1 and rig.router.registry.get("a").in_flight == 0


def test_against_a_real_http_replica_success_then_aclose_midway() -> None:
    from shipit.services.upstream import AiohttpUpstream
    from support.fake_openai import FakeTiming, serve

    with serve(FakeTiming(itl_s=0.02)) as url:
        rig = Rig({})
        rig.router.add_replica("a", url, state=ReplicaState.READY)

        async def go() -> None:
            upstream = AiohttpUpstream()
            rig.upstream = upstream  # type: ignore[assignment]
            try:
                short = {**CHAT, "max_tokens": 3}
                events = [
                    ev
                    async for ev in rig.core.run(
                        rig.view(short), json.dumps(short).encode(), rig.router
                    )
                ]
                body = b"".join(ev for ev in events if isinstance(ev, bytes))
                assert isinstance(events[0], Started) and events[0].status == 200
                assert body.count(b"tok") == 3 and body.endswith(b"data: [DONE]\n\n")
                assert isinstance(events[-1], Finished) and events[-1].output_tokens == 3

                long = {**CHAT, "max_tokens": 40}
                stream = rig.core.run(rig.view(long), json.dumps(long).encode(), rig.router)
                assert isinstance(await anext(stream), Started)
                assert isinstance(await anext(stream), bytes)
                assert rig.router.registry.get("a").in_flight == 1
                await stream.aclose()  # 40 tokens 20 ms apart were still to come
                assert rig.router.registry.get("a").in_flight == 0
                assert rig.router.ejections == []
            finally:
                await upstream.close()

        run(go())
