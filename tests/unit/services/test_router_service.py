"""Router service: leases, queue order, exclusion on retry, shedding, ejection bookkeeping."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from typing import Any

import pytest

from shipit.config.gateway import ConfigError, parse_config
from shipit.core.clock import FakeClock
from shipit.core.decisions import MemoryLog, entry_line, read_entries
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.admission import (
    DispatchSnapshot,
    ExclusionSnapshot,
    GiveUpSnapshot,
    OfferSnapshot,
    dispatch,
    exclusion,
    give_up,
    offer,
)
from shipit.policy.reliability import decide_outlier, decide_retry
from shipit.policy.routing import RouteSnapshot, RoutingState, plan_for
from shipit.policy.routing import decide as routing_decide
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


# ----- the driver: one clock read per decision, every decision logged and replayable ----------


class CountingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return super().now()


def test_a_free_slot_costs_one_clock_read_and_one_logged_route() -> None:
    d = parse_config({"deployments": [{"replicas": 0}]}).deployments[0]
    clock, log = CountingClock(), MemoryLog()
    r = RouterService(d, clock=clock, log=log)
    r.add_replica("a", "http://a", state=ReplicaState.READY)
    clock.reads = 0
    lease = asyncio.run(r.acquire(req("x")))
    assert clock.reads == 1
    ((policy, deployment, snapshot, state, decision),) = [
        (e.policy, e.deployment, e.snapshot, e.state, e.decision) for e in log.entries
    ]
    assert (policy, deployment) == ("route", "default")
    assert isinstance(snapshot, RouteSnapshot) and snapshot.request.request_id == "x"
    assert state == RoutingState() and decision == lease.decision


PLAIN = (int, float, str, bool, type(None), enum.Enum)


def assert_plain(value: object, path: str = "") -> None:
    """Only numbers, strings, enums, tuples, frozensets and frozen slotted dataclasses."""
    if isinstance(value, PLAIN):
        return
    if isinstance(value, tuple | frozenset):
        for i, item in enumerate(value):
            assert_plain(item, f"{path}[{i}]")
        return
    assert dataclasses.is_dataclass(value), f"{path}: {type(value).__name__}"
    params = type(value).__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and hasattr(type(value), "__slots__"), f"{path}: not frozen/slotted"
    for f in dataclasses.fields(value):
        assert_plain(getattr(value, f.name), f"{path}.{f.name}")


def replay(router: RouterService, policy: str, snapshot: Any, state: Any) -> object:
    """The pure function a logged decision came from, called again on what was logged."""
    d = router.deployment
    if policy == "route":
        plan = plan_for(snapshot.request.routing or d.routing.policy, d.routing)
        return routing_decide(plan, snapshot, state)[0]
    if policy == "outlier":
        return decide_outlier(d.outlier, snapshot, state)[0]
    if policy == "retry_budget":
        return decide_retry(d.retries, snapshot, state)[0]
    if isinstance(snapshot, ExclusionSnapshot):
        return exclusion(snapshot)
    step = {OfferSnapshot: offer, DispatchSnapshot: dispatch, GiveUpSnapshot: give_up}
    return step[type(snapshot)](d.queueing, snapshot, state)[0]  # type: ignore[operator]


def test_every_decision_is_logged_as_plain_records_and_replays_to_the_same_decision() -> None:
    d = parse_config(
        {
            "deployments": [
                {
                    "replicas": 0,
                    "queueing": {"max_concurrency": 1, "max_queue": 2},
                    "outlier": {"consecutive_failures": 1},
                }
            ]
        }
    ).deployments[0]
    log = MemoryLog()
    r = RouterService(d, clock=FakeClock(), log=log)
    r.add_replica("a", "http://a", state=ReplicaState.READY)
    r.add_replica("b", "http://b", state=ReplicaState.READY)

    async def go() -> None:
        r.on_request()
        first = await r.acquire(req("x"))  # a
        second = await r.acquire(req("y"))  # b
        waiting = [asyncio.create_task(r.acquire(req(f"w{i}", i))) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(AdmissionError):  # max_queue 2: the worst is refused
            await waiting[2]
        r.release(second, outcome="ok")  # b goes to w0
        r.release(first, outcome="failed", why="HTTP 500")  # a is ejected: w1 keeps waiting
        assert r.may_retry(1)
        r.release(await waiting[0], outcome="ok")  # b goes to w1
        late = RequestView(request_id="late", deployment="default", model="m", deadline_s=0.01)
        with pytest.raises(AdmissionError) as info:
            await r.acquire(late)  # b busy, a ejected: gives up at its deadline
        assert info.value.status == 504
        r.release(await waiting[1], outcome="ok")
        retry = await r.acquire(req("x2"), exclude=frozenset({"b"}))  # only b is routable
        assert retry.replica_id == "b"

    asyncio.run(go())
    policies = {e.policy for e in log.entries}
    assert policies == {"route", "admission", "outlier", "retry_budget"}
    kinds = {type(e.snapshot).__name__ for e in log.entries}
    assert kinds == {
        "RouteSnapshot",
        "OfferSnapshot",
        "DispatchSnapshot",
        "GiveUpSnapshot",
        "ExclusionSnapshot",
        "OutcomeSnapshot",
        "RetrySnapshot",
    }
    for entry in log.entries:
        policy, snapshot, state, decision = (
            entry.policy,
            entry.snapshot,
            entry.state,
            entry.decision,
        )
        assert_plain(snapshot, policy)
        assert_plain(state, policy)
        assert_plain(decision, policy)
        assert replay(r, policy, snapshot, state) == decision
        assert decision.reason_code and decision.reason  # type: ignore[attr-defined]
    # and the JSON-lines decision log writes them and reads them back equal
    assert list(read_entries(entry_line(e) for e in log.entries)) == log.entries


def test_a_shed_waiter_gets_429_and_a_cancelled_one_leaves_the_queue() -> None:
    r = router(queueing={"max_concurrency": 1, "max_queue": 1})
    r.add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        busy = await r.acquire(req("busy"))
        low = asyncio.create_task(r.acquire(req("low", 5)))
        await asyncio.sleep(0)
        high = asyncio.create_task(r.acquire(req("high", 0)))
        await asyncio.sleep(0)
        with pytest.raises(AdmissionError) as info:
            await low
        assert (info.value.status, info.value.reason_code) == (429, "shed")
        assert [e.request_id for e in r.queue.entries] == ["high"]
        high.cancel()
        await asyncio.gather(high, return_exceptions=True)
        assert r.queued() == 0
        r.release(busy, outcome="ok")
        assert r.registry.get("a").in_flight == 0  # type: ignore[union-attr]

    asyncio.run(go())


def test_a_waiter_whose_deadline_passes_gets_504_on_the_next_dispatch() -> None:
    clock = FakeClock()
    d = parse_config({"deployments": [{"replicas": 0, "queueing": {"max_concurrency": 1}}]})
    r = RouterService(d.deployments[0], clock=clock)
    r.add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        busy = await r.acquire(req("busy"))
        view = RequestView(request_id="late", deployment="default", model="m", deadline_s=5.0)
        late = asyncio.create_task(r.acquire(view))
        await asyncio.sleep(0)
        clock.advance(6.0)
        r.dispatch()
        with pytest.raises(AdmissionError) as info:
            await late
        assert (info.value.status, info.value.reason_code) == (504, "deadline")
        r.release(busy, outcome="ok")

    asyncio.run(go())


def test_custom_routing_and_version_weights_reach_the_decision() -> None:
    r = router(
        routing={
            "policy": "custom",
            "scorers": [{"name": "kv_cache", "weight": 1.0}],
            "version_weights": {"v1": 0, "v2": 1},
        }
    )
    r.registry.add("old", "http://old", state=ReplicaState.READY, version="v1")
    r.registry.add("new", "http://new", state=ReplicaState.READY, version="v2")

    async def go() -> list[str]:
        leases = [await r.acquire(req(f"q{i}")) for i in range(3)]
        picked = [lease.replica_id for lease in leases]
        r.set_version_weights({"v1": 1})
        picked.append((await r.acquire(req("after"))).replica_id)
        return picked

    assert asyncio.run(go()) == ["new", "new", "new", "old"]
    assert r.decisions_by_reason[("custom", "best_score")] == 4


def test_a_bad_composition_fails_when_the_router_is_built() -> None:
    with pytest.raises(ConfigError) as info:
        router(routing={"policy": "custom", "scorers": [{"name": "latency"}]})
    assert info.value.field == "routing.scorers.0.name"


def test_retry_budget_runs_out_and_says_why() -> None:
    log = MemoryLog()
    d = parse_config({"deployments": [{"replicas": 0, "retries": {"budget_min_per_s": 0}}]})
    r = RouterService(d.deployments[0], clock=FakeClock(), log=log)
    allowed = [r.may_retry(1) for _ in range(11)]
    assert allowed == [True] * 10 + [False]  # the budget starts with 10 banked
    assert log.entries[-1].decision.reason_code == "budget_exhausted"  # type: ignore[attr-defined]


def test_a_waiter_holds_out_for_its_full_cache_holder_and_keeps_its_priority() -> None:
    r = router(
        routing={"policy": "prefix_cache", "prefix_cache": {"prefill_us_per_token": 1000}},
        queueing={"max_concurrency": 1},
    )
    clock = r.clock
    assert isinstance(clock, FakeClock)
    r.add_replica("a", "http://a", state=ReplicaState.READY)
    r.add_replica("b", "http://b", state=ReplicaState.READY)
    hashes = tuple(range(100))

    def prompt(rid: str, priority: int = 0) -> RequestView:
        return RequestView(
            request_id=rid,
            deployment="default",
            model="m",
            priority=priority,
            prefix_hashes=hashes,
            prompt_tokens_estimate=1700,
        )

    async def go() -> None:
        first = await r.acquire(prompt("x"))  # nothing cached yet: either replica
        home = first.replica_id
        other = "b" if home == "a" else "a"
        clock.advance(1.0)
        r.release(first, outcome="ok")  # home: 1.0 s a request
        held = await r.acquire(prompt("y"))
        assert (held.replica_id, held.decision.reason_code) == (home, "prefix_hit")
        busy = await r.acquire(req("z"))
        assert busy.replica_id == other  # both full now
        w = asyncio.create_task(r.acquire(prompt("w")))
        lo = asyncio.create_task(r.acquire(req("lo", priority=1)))
        await asyncio.sleep(0)
        assert len(r.queue) == 2
        # other frees a slot. For w: at home, a slot in (0 + 1) x 1.0 s / 1 = 1.0 s, then
        # 100 tokens (0.1 s); on other, 1,700 tokens (1.7 s). w waits; lo, of a worse
        # priority, may not take the slot w let go.
        r.release(busy, outcome="ok")
        await asyncio.sleep(0)
        assert not w.done() and not lo.done()
        assert r.registry.get(other).in_flight == 0  # type: ignore[union-attr]
        assert r.decisions_by_reason[("prefix_cache", "prefix_hit")] == 1
        r.release(held, outcome="ok")  # home frees: w takes it, lo takes the other
        got_w, got_lo = await w, await lo
        assert (got_w.replica_id, got_w.decision.reason_code) == (home, "prefix_hit")
        assert got_lo.replica_id == other

    asyncio.run(go())
