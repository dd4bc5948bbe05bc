"""The router while no replica is ready: requests are held (up to ``cold_start_hold_s``, not
the shorter queue timeout), the autoscaler is told at once, the hold ends in 503 with
``Retry-After`` and a message that says a replica is starting, and a deadline still wins.
Holds here are tens of milliseconds of real time; nothing asserts how long anything took."""

from __future__ import annotations

import asyncio

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import RealClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.services.router import AdmissionError, RouterService


def router(**queueing: object) -> RouterService:
    d = parse_config({"deployments": [{"replicas": 0, "queueing": queueing}]}).deployments[0]
    return RouterService(d, clock=RealClock())


def req(rid: str, deadline_s: float | None = None) -> RequestView:
    return RequestView(request_id=rid, deployment="default", model="m", deadline_s=deadline_s)


def test_a_held_request_is_served_once_a_replica_is_ready_past_the_queue_timeout() -> None:
    r = router(queue_timeout_s=0.01, cold_start_hold_s=5)
    woken: list[bool] = []
    r.cold_listeners.append(lambda: woken.append(True))

    async def go() -> str:
        waiter = asyncio.ensure_future(r.acquire(req("a")))
        await asyncio.sleep(0.05)  # longer than the queue timeout: still held
        assert not waiter.done() and woken == [True]
        r.add_replica("x", "http://x")
        r.set_state("x", ReplicaState.READY)
        lease = await asyncio.wait_for(waiter, 5)
        return lease.replica_id

    assert asyncio.run(go()) == "x"


@pytest.mark.parametrize("starting", [True, False])
def test_the_hold_ends_in_503_with_retry_after_saying_a_replica_is_starting(
    starting: bool,
) -> None:
    r = router(cold_start_hold_s=0.02, cold_start_retry_after_s=7)
    if starting:
        r.add_replica("x", "http://x")
    else:
        r.cold_listeners.append(lambda: None)  # an autoscaler that can start one

    async def go() -> None:
        await r.acquire(req("a"))

    with pytest.raises(AdmissionError) as exc:
        asyncio.run(go())
    e = exc.value
    assert (e.status, e.reason_code, e.retry_after_s) == (503, "cold_start", 7)
    assert "retry after 7s" in e.reason
    assert ("1 replica(s) starting" if starting else "a replica is being started") in e.reason


def test_a_deadline_shorter_than_the_hold_still_ends_in_504() -> None:
    r = router(cold_start_hold_s=5)
    r.cold_listeners.append(lambda: None)

    async def go() -> None:
        await r.acquire(req("a", deadline_s=RealClock().now() + 0.02))

    with pytest.raises(AdmissionError) as exc:
        asyncio.run(go())
    assert exc.value.status == 504


def test_with_no_replica_and_nothing_to_start_one_the_request_gets_503_at_once() -> None:
    """No replica registered, no autoscaler listening: holding the request cannot help."""
    r = router(cold_start_hold_s=3600)

    async def go() -> None:
        await asyncio.wait_for(r.acquire(req("a")), 5)

    with pytest.raises(AdmissionError) as exc:
        asyncio.run(go())
    e = exc.value
    assert (e.status, e.reason_code) == (503, "no_replicas")
    assert "replicas" in e.reason and "autoscaling" in e.reason
