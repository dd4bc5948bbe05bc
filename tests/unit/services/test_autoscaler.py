"""The live autoscaler on a fake clock, the ``FakeBackend`` behind a real ``Fleet`` and a real
router whose replica states the test sets (standing in for the health monitor): scale from
zero at the first held request, cold starts in phases, scale-down that cordons and waits for
in-flight requests, idle -> zero, crash restart with back-off, never-ready replacement,
control-plane metrics and the status JSON. No sleeps: time moves only when the test says."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.static import StaticBackend
from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.decisions import NO_LOG, DecisionLog, MemoryLog, entry_line, read_entries
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.autoscaling import AutoscalingSnapshot, ScaleDecision
from shipit.policy.lifecycle import LifecycleDecision, LifecycleSnapshot
from shipit.services.autoscaler import Autoscaler
from shipit.services.router import Lease, RouterService
from shipit.telemetry.instruments import build_control_plane_metrics

PHASES = {"process_start": 0.5, "load_weights": 1.0, "warmup": 0.25}


async def probe(url: str) -> Mapping[str, Any]:
    return {"phases_s": PHASES, "weights_source": "cache"}


class Harness:
    def __init__(
        self,
        log: DecisionLog = NO_LOG,
        deployment: Mapping[str, object] | None = None,
        **autoscaling: object,
    ) -> None:
        data = {
            "deployments": [
                {**(deployment or {}), "autoscaling": {"min_replicas": 0, **autoscaling}}
            ]
        }
        self.deployment = parse_config(data).deployments[0]
        self.clock = FakeClock(100.0)
        self.router = RouterService(self.deployment, clock=self.clock)
        self.backend = FakeBackend()
        self.fleet = Fleet(
            [self.deployment],
            {"default": self.router.registry},
            local=self.backend,
            external=StaticBackend({}),
        )
        self.registry = CollectorRegistry()
        assert self.deployment.autoscaling is not None
        self.scaler = Autoscaler(
            self.router,
            self.fleet,
            self.deployment.autoscaling,
            clock=self.clock,
            metrics=build_control_plane_metrics(self.registry),
            probe=probe,
            wall=lambda: 1.7e9,
            log=log,
        )
        self._n = 0

    def request(self) -> RequestView:
        self._n += 1
        return RequestView(request_id=f"q{self._n}", deployment="default", model="m")

    def ready_all(self) -> None:
        for rid, r in ((x.replica_id, x) for x in self.router.registry.records()):
            if r.state is ReplicaState.STARTING:
                self.router.set_state(rid, ReplicaState.READY)

    def states(self) -> dict[str, str]:
        return {
            rid: r.state.value
            for rid, r in ((x.replica_id, x) for x in self.router.registry.records())
        }

    async def tick(self, advance_s: float = 1.0) -> None:
        self.clock.advance(advance_s)
        await self.scaler.tick()
        await self.scaler.close()  # let stops in progress finish

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"deployment": "default", **labels})


def test_scale_from_zero_at_the_first_held_request_and_the_cold_start_in_phases() -> None:
    async def go() -> None:
        h = Harness(max_replicas=3, idle_timeout_s=30)
        await h.tick()
        assert len(h.router.registry) == 0
        waiter = asyncio.ensure_future(h.router.acquire(h.request()))
        await asyncio.sleep(0)
        assert h.scaler._wake.is_set(), "a held request wakes the autoscaler"
        assert h.metric("shipit_requests_held") == 0  # published on the tick
        await h.tick(0.1)
        assert list(h.states().values()) == ["starting"]
        assert "scale from zero" in h.scaler.events[-1].reason
        assert h.metric("shipit_requests_held") == 1
        h.clock.advance(2.0)
        h.ready_all()  # the monitor saw /health 200
        lease = await asyncio.wait_for(waiter, 1)
        assert lease.replica_id in h.router.registry
        await h.tick(0.5)
        (cold,) = h.scaler.cold_starts
        assert cold.total_s == 2.0 and cold.weights_source == "cache"
        assert dict(cold.phases_s) == {**PHASES, "health": 0.25}
        assert h.metric("shipit_cold_start_seconds_count") == 1
        assert h.metric("shipit_cold_start_phase_seconds_sum", phase="load_weights") == 1.0
        assert h.metric("shipit_scale_events_total", direction="up") == 1
        assert h.metric("shipit_replicas", state="ready") == 1
        h.router.release(lease, outcome="ok")

    asyncio.run(go())


def test_scale_down_cordons_then_stops_only_after_in_flight_finishes() -> None:
    async def go() -> None:
        h = Harness(
            min_replicas=1, max_replicas=3, target_concurrency=1, target_utilization=1.0,
            autoscaling_window_s=4, scale_down_delay_s=0, max_scale_down_rate=10,
            cold_start_s=0,  # the fake backend's replicas are ready at once
        )  # fmt: skip
        await h.fleet.start_replicas("default", 2)
        h.ready_all()
        leases = [await h.router.acquire(h.request()) for _ in range(2)]
        for _ in range(6):
            await h.tick()
        # Load 2 -> one lease finishes; the stable window drains, the target drops to 1.
        h.router.release(leases[0], outcome="ok")
        busy = leases[1].replica_id
        for _ in range(6):
            await h.tick()
        # The idle replica was the victim (fewest in flight): drained at once and stopped.
        assert h.router.registry.ids() == [busy] and h.backend.stopped
        assert any(e.stopping for e in h.scaler.events)
        # min_replicas keeps the busy one; cordon it as a victim with a request in flight.
        h.scaler._cordon(busy)
        assert h.router.registry.get(busy).state is ReplicaState.DRAINING
        await h.tick()
        assert busy in h.router.registry, "not stopped while a request is in flight"
        h.router.release(leases[1], outcome="ok")
        await h.tick()
        assert busy not in h.router.registry and busy in h.backend.stopped

    asyncio.run(go())


def test_a_cordoned_replica_gets_no_new_requests() -> None:
    async def go() -> None:
        h = Harness(min_replicas=1, max_replicas=2)
        a, b = await h.fleet.start_replicas("default", 2)
        h.ready_all()
        first = await h.router.acquire(h.request())
        h.scaler._cordon(first.replica_id)
        others = [await h.router.acquire(h.request()) for _ in range(3)]
        assert {lease.replica_id for lease in others} == {b if first.replica_id == a else a}
        for lease in [first, *others]:
            h.router.release(lease, outcome="ok")

    asyncio.run(go())


def test_idle_goes_to_zero_after_the_idle_timeout_and_back_from_zero() -> None:
    async def go() -> None:
        h = Harness(
            max_replicas=2, idle_timeout_s=5, scale_down_delay_s=0, autoscaling_window_s=4,
            cold_start_s=0,  # the fake backend's replicas are ready at once
        )  # fmt: skip
        await h.fleet.start_replicas("default", 1)
        h.ready_all()
        lease = await h.router.acquire(h.request())
        await h.tick()
        h.router.release(lease, outcome="ok")
        sizes = []
        for _ in range(8):
            await h.tick()
            sizes.append(len(h.router.registry))
        assert sizes[0] == 1 and sizes[-1] == 0
        assert any("scale to zero" in e.reason for e in h.scaler.events)
        assert h.metric("shipit_scale_events_total", direction="down") == 1
        waiter = asyncio.ensure_future(h.router.acquire(h.request()))
        await asyncio.sleep(0)
        await h.tick(0.01)
        assert len(h.router.registry) == 1
        h.ready_all()
        h.router.release(await asyncio.wait_for(waiter, 1), outcome="ok")

    asyncio.run(go())


def test_a_crashed_replica_is_replaced_after_a_back_off() -> None:
    async def go() -> None:
        h = Harness(min_replicas=2, max_replicas=2)
        a, _ = await h.fleet.start_replicas("default", 2)
        h.ready_all()
        await h.tick()
        h.backend.dead.add(a)
        await h.tick(0.1)
        assert a not in h.router.registry and a in h.backend.stopped
        assert len(h.router.registry) == 1
        assert "start held back 1s after a crash" in h.scaler.last_reason
        await h.tick(1.0)  # the first back-off is 1 s
        assert len(h.router.registry) == 2

    asyncio.run(go())


def test_consecutive_crashes_hold_starts_longer_and_a_ready_replica_ends_the_streak() -> None:
    async def go() -> None:
        h = Harness(min_replicas=1, max_replicas=1)
        (a,) = await h.fleet.start_replicas("default", 1)
        h.ready_all()
        await h.tick()
        h.backend.dead.add(a)
        await h.tick(0.1)  # crash 1: held 1 s
        await h.tick(1.0)
        (b,) = h.router.registry.ids()
        h.backend.dead.add(b)  # crash 2 before it came up: held 2 s
        await h.tick(0.1)
        assert "start held back 2s after a crash" in h.scaler.last_reason
        await h.tick(1.0)
        assert len(h.router.registry) == 0, "still inside the 2 s hold"
        await h.tick(1.0)
        assert len(h.router.registry) == 1, "the hold is over: a third replica starts"
        h.ready_all()
        await h.tick()
        assert h.scaler.lifecycle_state.crashes == 0, "it came up: the streak is over"

    asyncio.run(go())


def test_a_stopped_replica_is_forgotten_by_the_router() -> None:
    async def go() -> None:
        h = Harness(min_replicas=1, max_replicas=1)
        (a,) = await h.fleet.start_replicas("default", 1)
        h.ready_all()
        forgotten: list[str] = []
        remove = h.router.remove_replica

        def spy(replica_id: str) -> None:
            forgotten.append(replica_id)
            remove(replica_id)

        h.router.remove_replica = spy  # type: ignore[method-assign]
        h.backend.dead.add(a)
        await h.tick()
        # The fleet unregistered it; the router also drops its outlier and prefix memory of it.
        assert a not in h.router.registry and forgotten == [a]

    asyncio.run(go())


def test_every_tick_logs_a_lifecycle_and_an_autoscaling_decision() -> None:
    async def go() -> MemoryLog:
        log = MemoryLog()
        h = Harness(log=log, min_replicas=1, max_replicas=1, startup_timeout_s=10)
        (first,) = await h.fleet.start_replicas("default", 1)
        for _ in range(12):
            await h.tick()
        assert first in h.backend.stopped
        return log

    log = asyncio.run(go())
    assert [e.policy for e in log.entries] == ["lifecycle", "autoscaling"] * 12
    assert {e.deployment for e in log.entries} == {"default"}
    assert [list(read_entries([entry_line(e)])) for e in log.entries] == [
        [e] for e in log.entries
    ], "every entry is replayable as written"
    lifecycle = [e for e in log.entries if e.policy == "lifecycle"]
    assert all(isinstance(e.snapshot, LifecycleSnapshot) for e in lifecycle)
    codes = [e.decision.reason_code for e in lifecycle if isinstance(e.decision, LifecycleDecision)]
    assert len(codes) == 12 and codes.count("never_ready") == 1 and codes[0] == "steady"
    replaced_at = codes.index("never_ready")
    scaling = [e for e in log.entries if e.policy == "autoscaling"]
    snap, decision = scaling[replaced_at].snapshot, scaling[replaced_at].decision
    assert isinstance(snap, AutoscalingSnapshot) and isinstance(decision, ScaleDecision)
    # The stuck replica is not counted in the same tick, so its replacement starts at once.
    assert (decision.current, decision.target, decision.reason_code) == (0, 1, "scale_from_zero")


def test_a_replica_that_never_becomes_ready_is_replaced() -> None:
    async def go() -> None:
        h = Harness(min_replicas=1, max_replicas=1, startup_timeout_s=10)
        (first,) = await h.fleet.start_replicas("default", 1)
        for _ in range(12):
            await h.tick()
        assert first in h.backend.stopped
        assert any(first in e.replaced for e in h.scaler.events)
        assert len(h.router.registry) == 1 and first not in h.router.registry

    asyncio.run(go())


def test_status_lists_bounds_decisions_and_cold_starts() -> None:
    async def go() -> dict[str, Any]:
        h = Harness(max_replicas=3)
        waiter = asyncio.ensure_future(h.router.acquire(h.request()))
        await asyncio.sleep(0)
        await h.tick()
        h.ready_all()
        lease: Lease = await asyncio.wait_for(waiter, 1)
        await h.tick()
        h.router.release(lease, outcome="ok")
        return h.scaler.status()

    status = asyncio.run(go())
    assert (status["min_replicas"], status["max_replicas"], status["desired"]) == (0, 3, 1)
    (event,) = status["decisions"]
    assert event["target"] == 1 and event["current"] == 0 and event["started"]
    assert event["at_unix_s"] == 1.7e9 and "scale from zero" in event["reason"]
    (cold,) = status["cold_starts"]
    assert set(cold["phases_s"]) == {*PHASES, "health"}


def test_work_queued_outside_the_router_counts_as_demand() -> None:
    """Async job lines wait in the job store, not the router's queue: told about them, the
    autoscaler scales from zero for them."""

    async def go() -> None:
        h = Harness(max_replicas=3, idle_timeout_s=30)
        await h.tick()
        assert len(h.router.registry) == 0
        h.scaler.extra_demand = lambda: 12
        await h.tick()
        assert len(h.router.registry) >= 1
        assert "scale from zero" in h.scaler.events[-1].reason

    asyncio.run(go())


# ----- demand from the router's counters ------------------------------------------------------


def test_the_snapshot_carries_the_routers_arrival_and_completion_counters() -> None:
    """Each request counts once as it is offered (not per retry); an ok answer counts as a
    completion with its service time, from its (last) dispatch to its last byte: queueing and
    a failed first attempt are not service."""

    async def go() -> None:
        log = MemoryLog()
        h = Harness(
            log=log, min_replicas=1, max_replicas=2, deployment={"queueing": {"max_concurrency": 1}}
        )
        await h.fleet.start_replicas("default", 2)
        h.ready_all()
        h.router.on_request()
        first = await h.router.acquire(h.request())  # placed at 100
        h.router.on_request()
        second = await h.router.acquire(h.request())  # the other replica, at 100
        h.router.on_request()
        third = asyncio.ensure_future(h.router.acquire(h.request()))
        await asyncio.sleep(0)
        assert h.router.queued() == 1
        h.clock.advance(2.0)
        h.router.release(first, outcome="ok")  # served 2 s; the third is placed at 102
        queued = await asyncio.wait_for(third, 1)
        h.clock.advance(0.5)
        # The second fails before its first byte and is retried: the same request, offered once.
        h.router.release(second, outcome="failed", why="HTTP 502")
        h.clock.advance(1.0)
        h.router.release(queued, outcome="ok")  # served 1.5 s after 2 s in the queue
        retried = await h.router.acquire(second.request, exclude=frozenset({second.replica_id}))
        h.clock.advance(1.0)
        h.router.release(retried, outcome="ok")  # served 1 s since its second dispatch
        h.router.on_request()
        refused = await h.router.acquire(h.request())
        h.router.release(refused, outcome="client_error", why="HTTP 400")  # not a completion
        await h.tick(0.0)
        snap = h.scaler.snapshot(h.clock.now())
        assert (snap.arrivals, snap.completed, snap.service_s) == (4, 3, 4.5)
        (logged,) = [e.snapshot for e in log.entries if e.policy == "autoscaling"]
        assert isinstance(logged, AutoscalingSnapshot)
        assert (logged.arrivals, logged.completed, logged.service_s) == (4, 3, 4.5)

    asyncio.run(go())


def test_a_backlog_queued_while_the_only_replica_was_down_is_not_counted_as_steady_load() -> None:
    """One replica serves a request a second, each for a second, then fails its health checks
    for 8 s while requests queue. Back, it drains the backlog in a few seconds; a replica
    started for the backlog would come up to nothing. Counting the queue as load (as the live
    path did without counters) asked for more replicas; with the counters the demand stays
    one request a second of one-second requests: one replica."""

    async def go() -> list[int]:
        h = Harness(
            min_replicas=1, max_replicas=4, target_concurrency=4, target_utilization=1.0,
            autoscaling_window_s=4, panic_window_s=2,
            deployment={"queueing": {"max_concurrency": 4}},
        )  # fmt: skip
        (only,) = await h.fleet.start_replicas("default", 1)
        h.ready_all()
        running: list[Lease] = []
        waiting: list[asyncio.Future[Lease]] = []
        targets: list[int] = []
        started: dict[str, float] = {}  # request id -> when it got its replica
        for second in range(24):
            if second == 6:
                h.router.set_state(only, ReplicaState.UNHEALTHY)
            if second == 14:
                h.router.set_state(only, ReplicaState.READY)
            for lease in [
                x for x in running if h.clock.now() - started[x.request.request_id] >= 1.0
            ]:
                running.remove(lease)
                h.router.release(lease, outcome="ok")
            h.router.on_request()
            waiting.append(asyncio.ensure_future(h.router.acquire(h.request())))
            for _ in range(5):  # granted waiters resume
                await asyncio.sleep(0)
            for w in [w for w in waiting if w.done()]:
                started[w.result().request.request_id] = h.clock.now()
                running.append(w.result())
            waiting = [w for w in waiting if not w.done()]
            await h.tick(0.0)
            assert h.scaler.last is not None
            targets.append(h.scaler.last.target)
            h.clock.advance(1.0)
        assert not waiting, "the backlog drained"
        assert h.router.registry.ids() == [only]
        return targets

    targets = asyncio.run(go())
    assert targets == [1] * 24, targets


def test_a_stop_that_meets_a_wake_up_still_stops_the_loop() -> None:
    """Cancelled in the same instant as it is woken (a held request arrives as the gateway
    shuts down), the loop ends: ``asyncio.wait_for`` on Python 3.11 returns the wake-up and
    drops the cancellation, which left the loop ticking and the shutdown waiting on it."""

    async def go() -> None:
        h = Harness(max_replicas=1, tick_interval_s=60)
        task = asyncio.ensure_future(h.scaler.run())
        for _ in range(5):
            await asyncio.sleep(0)  # the first tick runs; the loop waits for a wake-up
        h.scaler._wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()  # do not leave it running past the test
            await asyncio.wait({task}, timeout=2.0)
        assert done and task.cancelled(), "the loop went on after it was cancelled"

    asyncio.run(go())


def test_live_arrivals_count_their_prompts_prefill_at_the_measured_pace() -> None:
    """The gateway counts each arrival's prefill (prompt tokens x the replicas' prefill time a
    token: the configured 100 µs until one is measured, then the measured one) and the
    autoscaler's snapshot carries it, so the prefill rule sizes long-prompt traffic live as in
    the simulator."""

    async def go() -> None:
        h = Harness(max_replicas=8, prefill_utilization=0.5, autoscaling_window_s=10)
        h.router.add_replica("r0", "http://r0", state=ReplicaState.READY)
        h.router.on_request(12_000)  # nothing measured yet: 12,000 x 100 µs
        assert h.router.prefill_s == pytest.approx(1.2)
        # An 8,000-token prompt whose first token took 4 s: 500 µs a token from now on.
        view = RequestView(
            request_id="m", deployment="default", model="m", prompt_tokens_estimate=8_000
        )
        lease = await h.router.acquire(view)
        h.clock.advance(4.0)
        h.router.first_token(lease)
        h.router.release(lease, outcome="ok")
        h.router.on_request(10_000)
        assert h.router.prefill_s == pytest.approx(1.2 + 10_000 * 500e-6)
        assert h.scaler.snapshot(h.clock.now()).prefill_s == h.router.prefill_s
        # 10 s of 12,000-token prompts at two a second: 12 replica-seconds of prefill a
        # second, / 0.5 -> 24, capped at 8; request concurrency alone would ask for one.
        await h.tick()
        for _ in range(10):
            for _ in range(2):
                h.router.on_request(12_000)
            await h.tick()
        decision = h.scaler.events[-1]
        assert "prefill" in decision.reason, decision.reason
        assert list(h.states().values()).count("starting") == 8  # up to the cap

    asyncio.run(go())
