"""Router service: leases, queue order, exclusion on retry, shedding, ejection bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.services.router import AdmissionError, RouterService


def router(**deployment: object) -> RouterService:
    d = parse_config({"deployments": [{"replicas": 0, **deployment}]}).deployments[0]
    return RouterService(d, clock=FakeClock())


def req(rid: str, priority: int = 0) -> RequestView:
    return RequestView(request_id=rid, deployment="default", model="m", priority=priority)


def test_leases_count_in_flight_and_free_slots_go_to_waiters_in_priority_order() -> None:
    r = router(queueing={"max_concurrency": 1})
    r.add_replica("a", "http://a/", state=ReplicaState.READY)

    async def go() -> list[str]:
        first = await r.acquire(req("x"))
        assert (first.url, r.registry.get("a").in_flight) == ("http://a", 1)
        order: list[str] = []

        async def wait(rid: str, prio: int) -> None:
            lease = await r.acquire(req(rid, prio))
            order.append(rid)
            r.release(lease, outcome="ok")

        tasks = [asyncio.create_task(wait(rid, p)) for rid, p in [("l1", 2), ("h", 0), ("l2", 2)]]
        await asyncio.sleep(0)
        assert len(r.queue) == 3
        r.release(first, outcome="ok")
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(go()) == ["h", "l1", "l2"]


def test_requests_wait_for_a_replica_that_is_still_starting() -> None:
    r = router()
    r.add_replica("a", "http://a")

    async def go() -> str:
        task = asyncio.create_task(r.acquire(req("x")))
        await asyncio.sleep(0)
        assert not task.done() and len(r.queue) == 1
        r.set_state("a", ReplicaState.READY)
        return (await task).replica_id

    assert asyncio.run(go()) == "a"


def test_exclusion_avoids_a_failed_replica_unless_it_is_the_only_one() -> None:
    r = router()
    r.add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        lease = await r.acquire(req("x"), exclude=frozenset({"a"}))
        assert lease.replica_id == "a"  # nothing else to try
        r.add_replica("b", "http://b", state=ReplicaState.READY)
        for _ in range(3):
            other = await r.acquire(req("y"), exclude=frozenset({"a"}))
            assert other.replica_id == "b"
            r.release(other, outcome="ok")

    asyncio.run(go())


def test_a_waiter_that_cannot_be_placed_does_not_block_those_behind_it() -> None:
    r = router(queueing={"max_concurrency": 1, "queue_timeout_s": 1.0})
    r.add_replica("a", "http://a", state=ReplicaState.STARTING)
    r.add_replica("b", "http://b", state=ReplicaState.READY)

    async def go() -> None:
        busy = await r.acquire(req("busy"))  # b is full
        retry = asyncio.create_task(r.acquire(req("retry"), exclude=frozenset({"a"})))
        await asyncio.sleep(0)
        assert len(r.queue) == 1  # waits for b: a failed it
        r.set_state("a", ReplicaState.READY)  # a is free, but not for the retry
        assert not retry.done()
        other = await r.acquire(req("other"))  # queued behind the retry, yet placed at once
        assert other.replica_id == "a" and len(r.queue) == 1
        r.release(busy, outcome="ok")
        assert (await retry).replica_id == "b"

    asyncio.run(go())


def test_full_queue_refuses_with_429() -> None:
    r = router(queueing={"max_queue": 0})
    r.add_replica("a", "http://a")

    async def go() -> None:
        with pytest.raises(AdmissionError) as info:
            await r.acquire(req("x"))
        assert info.value.status == 429 and info.value.retry_after_s == 1

    asyncio.run(go())


def test_failures_feed_ejection_and_release_is_idempotent() -> None:
    r = router(outlier={"consecutive_failures": 1})
    r.add_replica("a", "http://a", state=ReplicaState.READY)
    r.add_replica("b", "http://b", state=ReplicaState.READY)

    async def go() -> None:
        lease = await r.acquire(req("x"))
        ejection = r.release(lease, outcome="failed", why="HTTP 500")
        assert ejection is not None and "HTTP 500" in ejection.reason
        assert r.release(lease, outcome="failed") is None
        assert r.registry.get(lease.replica_id).in_flight == 0
        assert r.ready_count() == 1

    asyncio.run(go())


def test_retry_attempts_are_bounded() -> None:
    r = router(retries={"max_attempts": 2})
    assert r.may_retry(1) and not r.may_retry(2)


def test_kv_events_feed_the_precise_index() -> None:
    r = router(routing={"policy": "prefix_cache", "prefix_cache": {"source": "kv_events"}})
    r.add_replica("a", "http://a", state=ReplicaState.READY)
    r.add_replica("b", "http://b", state=ReplicaState.READY)
    r.apply_kv_events("b", stored=[11, 12], evicted=[], reset=False)

    async def go() -> None:
        view = RequestView(request_id="x", deployment="default", model="m", prefix_hashes=(11, 12))
        lease = await r.acquire(view)
        assert (lease.replica_id, lease.decision.reason_code) == ("b", "prefix_hit")

    asyncio.run(go())
