"""Replica monitor and adapter loader against ``FakeUpstream``: states through the health
policy's thresholds, the decision log, load, adapters, feeds."""

from __future__ import annotations

import asyncio

import pytest

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.decisions import MemoryLog, entry_line, read_entries
from shipit.core.fleet import ReplicaState
from shipit.policy.health import HealthDecision, HealthSnapshot, HealthState, ProbeStreak
from shipit.services.monitor import (
    AdapterLoader,
    ReplicaMonitor,
    kv_capacity_blocks,
    parse_vllm_metrics,
)
from shipit.services.router import RouterService
from shipit.services.upstream import UpstreamError
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

METRICS = """# HELP vllm:num_requests_waiting x
vllm:num_requests_waiting{model_name="m"} 3.0
vllm:kv_cache_usage_perc{model_name="m"} 0.25
vllm:prefix_cache_hits_total{model_name="m"} 9.0
"""


def setup(**deployment: object) -> tuple[RouterService, FakeReplica, ReplicaMonitor]:
    d = parse_config({"deployments": [{"replicas": 0, **deployment}]}).deployments[0]
    router = RouterService(d, clock=FakeClock())
    replica = FakeReplica(metrics_text=METRICS, models=["sql"], health_status=503)
    upstream = FakeUpstream({"http://a": replica})
    router.add_replica("a", "http://a")
    return router, replica, ReplicaMonitor(router, upstream)


def test_parse_vllm_metrics() -> None:
    assert parse_vllm_metrics(METRICS) == {
        "vllm:num_requests_waiting": 3.0,
        "vllm:kv_cache_usage_perc": 0.25,
    }


def test_the_reported_kv_capacity_sizes_the_prefix_index() -> None:
    vllm_line = (
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",'
        'num_gpu_blocks="28600",num_cpu_blocks="0"} 1.0\n'
    )
    assert kv_capacity_blocks(METRICS) is None
    assert kv_capacity_blocks(METRICS + vllm_line) == 28600
    router, replica, monitor = setup(routing={"policy": "prefix_cache"})
    replica.metrics_text = METRICS + vllm_line
    replica.health_status = 200
    assert router.prefix_index.capacity("a") == 200_000  # the configured fallback
    asyncio.run(monitor.tick())
    asyncio.run(monitor.tick())
    assert router.prefix_index.capacity("a") == 28600


def test_health_drives_state_and_load_and_adapters_are_read() -> None:
    router, replica, monitor = setup()
    asyncio.run(monitor.tick())
    assert router.registry.get("a").state is ReplicaState.STARTING  # still loading
    replica.health_status = 200
    asyncio.run(monitor.tick())
    rec = router.registry.get("a")
    assert rec is not None
    assert (rec.state, rec.queue_depth, rec.kv_usage, rec.adapters) == (
        ReplicaState.READY,
        3,
        0.25,
        {"sql"},
    )
    replica.fail = "connect"
    for _ in range(2):  # below the default unhealthy_threshold (3): still routable
        asyncio.run(monitor.tick())
        assert router.registry.get("a").state is ReplicaState.READY  # type: ignore[union-attr]
    asyncio.run(monitor.tick())
    assert router.registry.get("a").state is ReplicaState.UNHEALTHY  # type: ignore[union-attr]
    replica.fail = None
    asyncio.run(monitor.tick())  # healthy_threshold 1: back at the first ok probe
    assert router.registry.get("a").state is ReplicaState.READY  # type: ignore[union-attr]


def test_every_probe_decision_is_logged_before_it_is_applied() -> None:
    d = parse_config(
        {"deployments": [{"replicas": 0, "health": {"unhealthy_threshold": 2}}]}
    ).deployments[0]
    clock = FakeClock(10.0)
    router = RouterService(d, clock=clock)
    replica = FakeReplica()
    router.add_replica("a", "http://a")
    log = MemoryLog()
    monitor = ReplicaMonitor(router, FakeUpstream({"http://a": replica}), log=log)
    asyncio.run(monitor.tick())
    replica.fail = "connect"
    for _ in range(2):
        clock.advance(1.0)
        asyncio.run(monitor.tick())
    codes = []
    for e in log.entries:
        assert (e.policy, e.deployment) == ("health", "default")
        assert isinstance(e.snapshot, HealthSnapshot) and isinstance(e.state, HealthState)
        assert isinstance(e.decision, HealthDecision)
        codes.append((e.snapshot.now_s, e.snapshot.replica.state, e.decision.reason_code))
        assert list(read_entries([entry_line(e)])) == [e], "replayable as written"
    assert codes == [
        (10.0, ReplicaState.STARTING, "ready"),
        (11.0, ReplicaState.READY, "probe_failed"),
        (12.0, ReplicaState.READY, "unhealthy"),
    ]
    assert log.entries[2].state == HealthState((ProbeStreak("a", failures=1),))
    assert router.registry.get("a").state is ReplicaState.UNHEALTHY  # type: ignore[union-attr]


def test_a_replica_that_restarts_between_probes_has_its_adapters_read_again() -> None:
    router, replica, monitor = setup()
    replica.health_status = 200
    asyncio.run(monitor.tick())
    assert router.registry.get("a").adapters == {"sql"}  # type: ignore[union-attr]
    replica.health_status = 503  # restarting: one failed probe, never marked unhealthy
    asyncio.run(monitor.tick())
    replica.models.clear()
    replica.health_status = 200
    asyncio.run(monitor.tick())
    rec = router.registry.get("a")
    assert rec is not None and (rec.state, rec.adapters) == (ReplicaState.READY, frozenset())


def test_kv_event_pages_are_applied_and_resumed() -> None:
    router, replica, monitor = setup(
        routing={
            "policy": "prefix_cache",
            "prefix_cache": {"source": "kv_events", "kv_event_poll_s": 0.05},
        },
        health_interval_s=30,
    )
    replica.health_status = 200
    replica.kv_pages = [
        {
            "events": [{"kind": "stored", "block_hash": 5}, {"kind": "stored", "block_hash": 6}],
            "truncated": False,
            "next_after": 1,
        },
        {"events": [{"kind": "evicted", "block_hash": 6}], "truncated": False, "next_after": 2},
    ]
    policy = router.policy("prefix_cache")

    async def go() -> None:
        clock = asyncio.get_running_loop().time
        await monitor.tick()  # ready: the replica's feed starts, and reads the first page now
        await asyncio.sleep(0)
        assert policy.index.match_blocks("a", [5, 6]) == 2  # type: ignore[attr-defined]
        start = clock()
        async with asyncio.timeout(2):
            while policy.index.match_blocks("a", [5, 6]) != 1:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        # The next page came one kv_event_poll_s later, not at the next health probe.
        assert 0.04 <= clock() - start < 0.5
        assert replica.kv_pages == []
        router.remove_replica("a")
        await monitor.tick()
        assert monitor.feeds == {}
        await monitor.stop_feeds()

    asyncio.run(go())


def test_adapter_loader_calls_once_and_explains_missing_paths() -> None:
    replica = FakeReplica()
    loader = AdapterLoader(FakeUpstream({"http://a": replica}), {"sql": "/adapters/sql"})

    async def go() -> None:
        await asyncio.gather(*(loader.ensure("a", "http://a", "sql") for _ in range(5)))
        assert len(replica.admin_calls) == 1
        with pytest.raises(UpstreamError, match=r"lora_affinity\.adapters"):
            await loader.ensure("a", "http://a", "unknown")

    asyncio.run(go())


class _GatedHealth(FakeUpstream):
    """``/health`` answers only once ``gate`` is set, so a test can act mid-probe."""

    def __init__(self, replicas: dict[str, FakeReplica], gate: asyncio.Event) -> None:
        super().__init__(replicas)
        self.gate = gate

    async def get(self, url: str, *, timeout_s: float) -> tuple[int, bytes]:
        if url.endswith("/health"):
            await self.gate.wait()
        return await super().get(url, timeout_s=timeout_s)


@pytest.mark.parametrize("start", [ReplicaState.READY, ReplicaState.UNHEALTHY])
def test_a_replica_cordoned_during_a_probe_stays_cordoned(start: ReplicaState) -> None:
    d = parse_config({"deployments": [{"replicas": 0}]}).deployments[0]
    router = RouterService(d, clock=FakeClock())
    router.add_replica("a", "http://a", state=start)
    gate = asyncio.Event()
    monitor = ReplicaMonitor(router, _GatedHealth({"http://a": FakeReplica()}, gate))

    async def go() -> None:
        tick = asyncio.create_task(monitor.tick())
        await asyncio.sleep(0.01)  # the probe now waits for /health
        router.set_state("a", ReplicaState.DRAINING)  # what the autoscaler's cordon does
        gate.set()
        await tick
        assert router.registry.get("a").state is ReplicaState.DRAINING

    asyncio.run(go())
