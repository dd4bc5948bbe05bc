"""A live fleet plane's GPU failures and obtain delays: failures drawn per ready replica from a
seeded RNG at the fleet's per-GPU rate, or triggered; the replica killed (or stopped where the
backend cannot kill), detected, its pseudo-node cordoned, stopped and replaced through
``policy.replica_faults``, never reaped as a crash by the autoscaler; a pool's obtain delay
holds a replica as a ``starting`` stand-in the autoscaler counts. Fake clock, fake backend
behind a real ``Fleet`` and router."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.static import StaticBackend
from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.gateway import parse_config
from shipit.config.pools import LivePlaneConfig
from shipit.core.clock import FakeClock
from shipit.core.decisions import MemoryLog
from shipit.core.fleet import ReplicaState
from shipit.services.autoscaler import Autoscaler
from shipit.services.router import RouterService
from shipit.services.spot_pools import PlanePools, PoolError
from shipit.sim.replay import replay
from shipit.telemetry.instruments import build_control_plane_metrics

ON_DEMAND = {"on_demand": {"usd_per_gpu_hour": 4.0}}


class NoKill(FakeBackend):
    kill = None  # type: ignore[assignment]  # a backend that can only stop


class Plane:
    def __init__(
        self,
        pools: dict[str, Any] = ON_DEMAND,
        *,
        rate: float = 0.0,
        gpus: int = 1,
        seed: int = 0,
        backend: FakeBackend | None = None,
    ) -> None:
        self.deployment = parse_config({"deployments": [{"name": "chat", "replicas": 1}]})
        d = self.deployment.deployments[0]
        self.clock = FakeClock(100.0)
        self.router = RouterService(d, clock=self.clock)
        self.backend = backend or FakeBackend()
        self.fleet = Fleet(
            [d], {"chat": self.router.registry}, local=self.backend, external=StaticBackend({})
        )
        self.registry = CollectorRegistry()
        self.log = MemoryLog()
        plane = LivePlaneConfig.model_validate(
            {
                "name": "east",
                "pools": pools,
                "spot_seed": seed,
                "gpu_failures_per_hour": rate,
                "gpus_per_replica": gpus,
            }
        )
        self.metrics = build_control_plane_metrics(self.registry)
        self.pools = PlanePools(
            plane,
            {"chat": self.router},
            self.fleet,
            clock=self.clock,
            registry=self.registry,
            metrics=self.metrics,
            log_decisions=self.log,
        )

    def ready_all(self) -> None:
        for r in self.router.views():
            if r.state is ReplicaState.STARTING and r.backend != "obtaining":
                self.router.set_state(r.replica_id, ReplicaState.READY)

    def states(self) -> dict[str, str]:
        return {r.replica_id: r.state.value for r in self.router.views()}


def failed_draws(seed: int, rate: float, gpus: int = 1) -> list[str]:
    async def go() -> list[str]:
        p = Plane(rate=rate, gpus=gpus, seed=seed)
        await p.pools.start_replicas("chat", 4)
        p.ready_all()
        assert p.pools.gpus.draw(p.clock.now()) == []  # the first draw only starts the clock
        p.clock.advance(60)
        return [rid for _, rid in p.pools.gpus.draw(p.clock.now())]

    return asyncio.run(go())


def test_gpu_failures_are_drawn_per_ready_replica_from_a_seeded_rng() -> None:
    assert failed_draws(seed=1, rate=0.0) == []
    # 360 an hour per GPU for 60 s: each replica fails with probability 1 - e^-6.
    assert failed_draws(seed=1, rate=360.0) == ["chat-0", "chat-1", "chat-2", "chat-3"]
    # 30 an hour per GPU: about 39% a replica; the seed fixes which.
    once = failed_draws(seed=7, rate=30.0)
    assert once == failed_draws(seed=7, rate=30.0)
    hits = sum(len(failed_draws(seed=s, rate=30.0)) for s in range(100, 130))
    assert 0.25 <= hits / 120 <= 0.55, hits  # 120 replica-minutes; 3 standard deviations
    # Four GPUs a replica at 7.5 an hour each: the same 30 an hour a replica.
    hits4 = sum(len(failed_draws(seed=s, rate=7.5, gpus=4)) for s in range(100, 130))
    assert hits4 == hits


def test_a_gpu_failure_kills_cordons_stops_and_replaces_the_replica() -> None:
    async def go() -> None:
        p = Plane()
        (rid,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        event = await p.pools.gpus.fail(rid)
        assert p.backend.killed == [rid] and p.backend.stopped == [rid]
        assert event["killed"] == "SIGKILL" and event["detected_by"] == "process exit"
        assert event["cause"] == "triggered" and event["kind"] == "gpu_failure"
        (replacement,) = event["replacements"]
        assert event["replacement_pools"] == ["on_demand"]
        assert p.states() == {replacement: "starting"}  # the failed one is gone
        assert event["cordoned"] == [f"node-{rid}"]
        assert [s.split(":")[0] for s in event["steps"]] == ["cordon", "stop", "replace"]
        status = p.pools.status()
        assert status["cordoned"] == {f"node-{rid}": 100.0}
        assert status["gpu_failures"] == 1 and status["events"][-1] == event
        sample = {"deployment": "chat", "cause": "triggered"}
        assert p.registry.get_sample_value("shipit_gpu_failures_total", sample) == 1
        assert [e.policy for e in p.log.entries] == ["pool_choice", "replica_faults", "pool_choice"]
        # The same decisions again from the log.
        report = replay(p.log.entries, {"chat": p.deployment.deployments[0]})
        assert report.identical, report

    asyncio.run(go())


def test_a_backend_that_cannot_kill_stops_the_replica_instead() -> None:
    async def go() -> None:
        p = Plane(backend=NoKill())
        (rid,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        event = await p.pools.gpus.fail(rid)
        assert event["killed"] == "stopped" and p.backend.stopped == [rid]
        assert len(event["replacements"]) == 1 and rid not in p.router.registry

    asyncio.run(go())


def test_a_drill_names_what_is_wrong_with_the_replica() -> None:
    async def go() -> None:
        p = Plane()
        (rid,) = await p.pools.start_replicas("chat", 1)
        with pytest.raises(PoolError, match=rf"replica {rid} is starting; only a ready"):
            await p.pools.gpus.fail(rid)
        with pytest.raises(PoolError, match=rf"no replica 'nope' in this plane.*: {rid}"):
            await p.pools.gpus.fail("nope")
        assert p.backend.killed == []

    asyncio.run(go())


def test_the_autoscaler_does_not_reap_a_failed_replica_as_a_crash() -> None:
    """Between the kill and the stop the autoscaler ticks: the replica still counts, alive, so
    there is no crash back-off and no second replacement."""

    async def go() -> None:
        p = Plane()
        (rid,) = await p.pools.start_replicas("chat", 1)
        p.ready_all()
        scaler = Autoscaler(
            p.router,
            p.pools,
            AutoscalingConfig(min_replicas=1, max_replicas=4),
            clock=p.clock,
        )
        p.pools.gpus.failing.add(rid)
        p.backend.dead.add(rid)  # killed, not yet dealt with
        await scaler.tick()
        assert scaler.last_lifecycle is not None and scaler.last_lifecycle.steps == ()
        assert scaler.lifecycle_state.crashes == 0 and list(p.states()) == [rid]

    asyncio.run(go())


def test_a_pools_obtain_delay_holds_a_starting_stand_in_until_the_machine_comes() -> None:
    async def go() -> None:
        p = Plane({"on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 0.2}})
        (stand_in,) = await p.pools.start_replicas("chat", 1)
        record = p.router.registry.get(stand_in)
        assert record is not None and record.backend == "obtaining"
        assert record.state is ReplicaState.STARTING and record.pool.value == "on_demand"
        assert p.backend.started == []  # no process before the machine is there
        assert p.pools.managed("chat") == [stand_in] and p.pools.alive("chat", stand_in)
        assert list(p.pools.status()["obtaining"]) == [stand_in]
        # The autoscaler counts it: at its minimum of one, it starts no other meanwhile.
        scaler = Autoscaler(
            p.router, p.pools, AutoscalingConfig(min_replicas=1, max_replicas=4), clock=p.clock
        )
        await scaler.tick()
        assert p.pools.managed("chat") == [stand_in]
        await asyncio.wait_for(asyncio.gather(*(o.task for o in p.pools.obtaining.values())), 5)
        assert p.states() == {"chat-0": "starting"} and len(p.backend.started) == 1
        assert p.router.registry.get("chat-0").pool.value == "on_demand"  # type: ignore[union-attr]
        event = p.pools.events[-1]
        assert (event["kind"], event["stand_in"], event["replicas"]) == (
            "obtained",
            stand_in,
            ["chat-0"],
        )
        assert event["obtain_delay_s"] == 0.2 and p.pools.status()["obtaining"] == {}

    asyncio.run(go())


def test_stopping_a_stand_in_cancels_the_wait_for_its_machine() -> None:
    async def go() -> None:
        p = Plane({"on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 30.0}})
        (stand_in,) = await p.pools.start_replicas("chat", 1)
        (entry,) = p.pools.obtaining.values()
        await p.pools.stop_replica("chat", stand_in)
        await asyncio.gather(entry.task, return_exceptions=True)
        assert entry.task.cancelled() and p.states() == {} and p.backend.started == []

    asyncio.run(go())


def test_a_replica_that_fails_to_start_after_its_machine_came_leaves_no_stand_in() -> None:
    class Broken(FakeBackend):
        async def start(self, spec: Any, count: int) -> Any:
            raise RuntimeError("no such model")

    async def go() -> None:
        p = Plane(
            {"on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 0.05}}, backend=Broken()
        )
        (stand_in,) = await p.pools.start_replicas("chat", 1)
        (entry,) = p.pools.obtaining.values()
        await asyncio.wait_for(entry.task, 5)  # logged, not raised
        assert p.states() == {} and p.pools.managed("chat") == []
        assert p.pools.events[-1]["replicas"] == [] and stand_in not in p.pools.labelled

    asyncio.run(go())
