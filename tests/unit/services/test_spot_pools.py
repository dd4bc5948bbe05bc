"""A live fleet plane's pools: each replica's pool through ``policy.pool_choice`` (the first
ones adopted on the first tick), spot pre-emptions drawn from a seeded RNG or triggered, and
the notice through ``policy.replica_faults``: drained (nothing new, the lease in flight still
finishes), replaced on demand while spot is short, stopped at the deadline. Fake clock, fake
backend behind a real ``Fleet`` and router; no sockets, no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.static import StaticBackend
from shipit.config.gateway import parse_config
from shipit.config.pools import LivePlaneConfig
from shipit.core.clock import FakeClock
from shipit.core.decisions import MemoryLog
from shipit.core.fleet import CapacityPool, ReplicaState
from shipit.core.views import RequestView
from shipit.services.router import RouterService
from shipit.services.spot_pools import PlanePools, PoolError
from shipit.sim.replay import replay
from shipit.telemetry.instruments import build_control_plane_metrics

SPOT_CHEAP = {
    "reserved": {"usd_per_gpu_hour": 2.0, "max_replicas": 1},
    "on_demand": {"usd_per_gpu_hour": 4.0},
    "spot": {"usd_per_gpu_hour": 1.0, "preemptions_per_hour": 0.0, "notice_s": 30.0},
}


class Plane:
    def __init__(self, pools: dict[str, Any] = SPOT_CHEAP, seed: int = 0) -> None:
        self.deployment = parse_config({"deployments": [{"name": "chat", "replicas": 1}]})
        d = self.deployment.deployments[0]
        self.clock = FakeClock(100.0)
        self.router = RouterService(d, clock=self.clock)
        self.backend = FakeBackend()
        self.fleet = Fleet(
            [d], {"chat": self.router.registry}, local=self.backend, external=StaticBackend({})
        )
        self.registry = CollectorRegistry()
        self.log = MemoryLog()
        plane = LivePlaneConfig.model_validate({"name": "east", "pools": pools, "spot_seed": seed})
        self.pools = PlanePools(
            plane,
            {"chat": self.router},
            self.fleet,
            clock=self.clock,
            registry=self.registry,
            metrics=build_control_plane_metrics(self.registry),
            log_decisions=self.log,
        )

    def pools_of(self) -> dict[str, str]:
        return {r.replica_id: r.pool.value for r in self.router.views()}

    def ready_all(self) -> None:
        for r in self.router.views():
            if r.state is ReplicaState.STARTING:
                self.router.set_state(r.replica_id, ReplicaState.READY)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"deployment": "chat", **labels})


def test_each_replica_gets_its_pool_through_the_pool_choice_policy() -> None:
    async def go() -> None:
        p = Plane()
        await p.fleet.start()  # the first replica, started before the pools ran
        await p.pools.tick()  # adopted: reserved has room
        started = await p.pools.start_replicas("chat", 2)  # reserved full: spot is cheaper
        pools = p.pools_of()
        assert pools == {"chat-0": "reserved", started[0]: "spot", started[1]: "spot"}
        assert p.metric("shipit_pool_choices_total", pool="spot", reason="spot_cheaper") == 2
        assert p.metric("shipit_replicas_by_pool", pool="spot") == 2
        assert [e.policy for e in p.log.entries] == ["pool_choice"] * 3
        assert p.pools.status()["replicas_by_pool"] == {"reserved": 1, "on_demand": 0, "spot": 2}

    asyncio.run(go())


def test_a_notice_drains_the_replica_lets_its_request_finish_and_replaces_it_on_demand() -> None:
    async def go() -> None:
        p = Plane({"on_demand": SPOT_CHEAP["on_demand"], "spot": SPOT_CHEAP["spot"]})
        (spot,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        lease = await p.router.acquire(RequestView(request_id="q1", deployment="chat", model="m"))
        assert lease.replica_id == spot
        event = await p.pools.preempt(spot)
        assert p.router.registry.get(spot).state is ReplicaState.DRAINING  # type: ignore[union-attr]
        (replacement,) = event["replacements"]
        assert event["replacement_pools"] == ["on_demand"]  # spot is short after a pre-emption
        assert event["deadline_s"] == 130.0 and event["cause"] == "triggered"
        assert any(s.startswith("drain:") for s in event["steps"])
        assert p.metric("shipit_spot_preemptions_total", cause="triggered") == 1
        assert [e.policy for e in p.log.entries][-2:] == ["replica_faults", "pool_choice"]
        # Nothing new goes to it: the next request waits for the replacement.
        waiter = asyncio.ensure_future(
            p.router.acquire(RequestView(request_id="q2", deployment="chat", model="m"))
        )
        await asyncio.sleep(0)
        assert not waiter.done()
        p.ready_all()
        second = await asyncio.wait_for(waiter, 1)
        assert second.replica_id == replacement
        # The request in flight on the noticed replica finishes within the notice.
        p.clock.advance(10)
        p.router.release(lease, outcome="ok")
        await p.pools.tick()
        assert spot in p.router.registry  # not stopped before its deadline
        p.clock.advance(25)  # past the deadline: the provider takes it
        await p.pools.tick()
        await p.pools.close()  # the stop runs in the background
        assert spot not in p.router.registry and p.backend.stopped == [spot]
        assert p.pools.status()["preemptions"] == 1
        p.router.release(second, outcome="ok")

    asyncio.run(go())


def draws(seed: int, rate: float) -> list[str]:
    async def go() -> list[str]:
        spot = {**SPOT_CHEAP["spot"], "preemptions_per_hour": rate}
        p = Plane({"spot": spot}, seed=seed)
        await p.pools.start_replicas("chat", 4)
        p.ready_all()
        await p.pools.tick()  # the first draw only starts the clock
        p.clock.advance(60)
        await p.pools.tick()
        return [e["replica"] for e in p.pools.events if e["cause"] == "drawn"]

    return asyncio.run(go())


def test_preemptions_are_drawn_at_the_pools_rate_from_a_seeded_rng() -> None:
    assert draws(seed=1, rate=0.0) == []
    # 360 an hour for 60 s: each spot replica is pre-empted with probability 1 - e^-6.
    assert draws(seed=1, rate=360.0) == ["chat-0", "chat-1", "chat-2", "chat-3"]
    # 30 an hour for 60 s: 1 - e^-0.5, about 39% each; the seed fixes which.
    assert draws(seed=7, rate=30.0) == draws(seed=7, rate=30.0) == ["chat-1"]
    assert draws(seed=9, rate=30.0) == ["chat-1", "chat-2"]
    hits = sum(len(draws(seed=s, rate=30.0)) for s in range(100, 130))
    assert 0.25 <= hits / 120 <= 0.55, hits  # 120 replica-minutes; 3 standard deviations


def test_only_a_ready_spot_replica_can_be_preempted() -> None:
    async def go() -> None:
        p = Plane()
        (reserved,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        with pytest.raises(PoolError, match="in pool reserved"):
            await p.pools.preempt(reserved)
        with pytest.raises(PoolError, match="no replica 'nope'"):
            await p.pools.preempt("nope")

    asyncio.run(go())


def test_a_planes_pool_and_fault_decisions_replay_to_the_same_decisions() -> None:
    """What a live plane logs (``--record-decisions``) replays through the simulator's replay
    to identical pool choices and fault steps."""

    async def go() -> Plane:
        p = Plane({"on_demand": SPOT_CHEAP["on_demand"], "spot": SPOT_CHEAP["spot"]})
        (spot,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        await p.pools.preempt(spot)
        p.clock.advance(31)
        await p.pools.tick()
        await p.pools.close()
        return p

    p = asyncio.run(go())
    report = replay(p.log.entries, {"chat": p.deployment.deployments[0]})
    assert dict(report.by_policy) == {"pool_choice": 2, "replica_faults": 1}
    assert report.identical, report
    tampered = [
        dataclasses.replace(e, decision=dataclasses.replace(e.decision, pool=CapacityPool.SPOT))
        if e.policy == "pool_choice"
        else e
        for e in p.log.entries
    ]
    assert replay(tampered, {"chat": p.deployment.deployments[0]}).mismatches


def test_a_notice_is_refused_until_the_replica_is_ready_and_only_once() -> None:
    spot_only = {"on_demand": SPOT_CHEAP["on_demand"], "spot": SPOT_CHEAP["spot"]}

    async def go() -> None:
        p = Plane(spot_only)
        (spot,) = await p.pools.start_replicas("chat", 1)
        with pytest.raises(PoolError, match="is starting; only a ready replica"):
            await p.pools.preempt(spot)
        p.ready_all()
        await p.pools.preempt(spot)
        p.clock.advance(10)
        with pytest.raises(PoolError, match=r"already has its notice \(20s left\)"):
            await p.pools.preempt(spot)
        slow = Plane({**spot_only, "spot": {**SPOT_CHEAP["spot"], "obtain_delay_s": 30.0}})
        (waiting,) = await slow.pools.start_replicas("chat", 1)
        with pytest.raises(PoolError, match="still being obtained"):
            await slow.pools.preempt(waiting)
        await slow.pools.close()
        await p.pools.close()

    asyncio.run(go())
