"""The demand counters the live autoscaler reads, counted where requests pass the router: one
arrival per request however many attempts it takes, one completion per answer with its
service time from the dispatch to its replica to the last byte. Requests go through the real
``RequestCore`` against scripted replicas (``FakeUpstream``) on a fake clock that moves only
while a replica holds its answer, so the service time is exact."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.parse import parse_request
from shipit.gateway.request_core import Event, Finished, RequestCore
from shipit.services.autoscaler import Autoscaler
from shipit.services.monitor import AdapterLoader
from shipit.services.router import RouterService
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class NoPool:
    """The autoscaler's pool, unused here: the test reads its snapshot, it starts nothing."""

    async def start_replicas(self, deployment: str, count: int) -> list[str]:
        return []

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        return None

    def managed(self, deployment: str) -> list[str]:
        return []

    def alive(self, deployment: str, replica_id: str) -> bool:
        return True


class Rig:
    def __init__(self, replicas: dict[str, FakeReplica], **deployment: Any) -> None:
        cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **deployment}]})
        self.dep = cfg.deployments[0]
        self.clock = FakeClock(100.0)
        self.router = RouterService(self.dep, clock=self.clock)
        self.upstream = FakeUpstream({f"http://{rid}": r for rid, r in replicas.items()})
        self.core = RequestCore(
            metrics=GatewayMetrics({"default": self.router}),
            upstream=lambda: self.upstream,
            adapters=lambda: AdapterLoader(self.upstream, {}),
            now=self.clock.now,
        )
        for rid in replicas:
            self.router.add_replica(rid, f"http://{rid}", state=ReplicaState.READY)
        self.scaler = Autoscaler(self.router, NoPool(), AutoscalingConfig(), clock=self.clock)
        self.ids = 0

    async def request(self, replica: FakeReplica | None = None, serve_s: float = 0.0) -> Event:
        """One request as a door sends it (``on_request``, then the core); while ``replica``
        holds its answer the clock moves ``serve_s``. Its ``Finished``."""
        self.ids += 1
        view = parse_request(
            request_id=f"r{self.ids}",
            client_request_id=None,
            path="/v1/chat/completions",
            headers={},
            body=json.dumps(CHAT).encode(),
            deployments={"default": self.dep},
            adapters={"default": set()},
            now_s=self.clock.now(),
        )
        self.router.on_request()
        hold = asyncio.Event()
        if replica is not None:
            replica.hold = hold
        events = asyncio.ensure_future(self._events(view))
        for _ in range(20):  # the request reaches its replica, which holds the answer
            await asyncio.sleep(0)
        if replica is not None:
            self.clock.advance(serve_s)
            hold.set()
        *_, last = await events
        return last

    async def _events(self, view: Any) -> list[Event]:
        return [ev async for ev in self.core.run(view, json.dumps(CHAT).encode(), self.router)]

    def counters(self) -> tuple[int, int, float]:
        snap = self.scaler.snapshot(self.clock.now())
        return snap.arrivals, snap.completed, snap.service_s


def test_a_retried_request_is_one_arrival_and_one_completion_served_by_its_last_replica() -> None:
    async def go() -> None:
        bad, good = FakeReplica(fail="connect"), FakeReplica()
        rig = Rig({"a": bad, "b": good})
        rig.router.registry.take_slot("b")  # least_outstanding tries a first
        finished = await rig.request(good, serve_s=2.5)
        assert isinstance(finished, Finished) and (finished.status, finished.attempts) == (200, 2)
        assert rig.counters() == (1, 1, 2.5)

    asyncio.run(go())


def test_refused_failed_and_client_error_answers_are_arrivals_but_not_completions() -> None:
    async def go() -> None:
        ok, broken = FakeReplica(), FakeReplica(break_after_chunks=1)
        rig = Rig({"a": ok}, queueing={"max_concurrency": 1, "max_queue": 0})
        served = await rig.request(ok, serve_s=1.0)
        assert isinstance(served, Finished) and served.outcome == "ok"
        rig.router.registry.take_slot("a")  # full, and no queue: the next one is refused
        refused = await rig.request()
        assert isinstance(refused, Finished) and refused.status == 429
        rig.router.registry.give_slot("a")
        rig.upstream.replicas["http://a"] = broken
        failed = await rig.request(broken, serve_s=4.0)
        assert isinstance(failed, Finished) and failed.status == 502
        rig.upstream.replicas["http://a"] = FakeReplica(status=400)
        client_error = await rig.request()
        assert isinstance(client_error, Finished) and client_error.outcome == "client_error"
        assert rig.counters() == (4, 1, 1.0)

    asyncio.run(go())
