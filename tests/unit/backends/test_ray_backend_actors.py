"""``RayBackend`` driving actors, against a stand-in for Ray's API (no cluster): the options each
actor gets (resources, pool, node affinity from the spread, no restarts), the URL it reports,
a replica whose watch fails (actor or node died) no longer alive, stop = drain on the node then
kill the actor, close once. The real thing runs in tests/integration/test_ray_backend_cluster.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from shipit.backends.base import ReplicaSpec
from shipit.backends.ray import RayBackend
from shipit.config.ray_backend import RayBackendConfig


class Ref:
    def __init__(self, value: Any = None, *, done: bool = True, error: Exception | None = None):
        self.fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.value, self.error = value, error
        if done:
            self.finish()

    def finish(self, error: Exception | None = None) -> None:
        self.error = error or self.error
        if self.error is not None:
            self.fut.set_exception(self.error)
        else:
            self.fut.set_result(self.value)

    def future(self) -> concurrent.futures.Future[Any]:
        return self.fut


class Method:
    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> Ref:
        self.actor.calls.append((self.name, args))
        return self.actor.answer(self.name, args)


@dataclass
class FakeActor:
    replica_id: str
    options: dict[str, Any]
    node_id: str
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    watch: Ref | None = None

    def answer(self, name: str, args: tuple[Any, ...]) -> Ref:
        if name == "launch":
            port = 9000 + len(FakeRay.actors)
            info = {"node_id": self.node_id, "node_ip": "10.0.0.1", "host": args[2] or "10.0.0.1"}
            info |= {"port": port, "pid": 1, "log_path": f"/logs/{self.replica_id}.log"}
            return Ref(info)
        if name == "wait":
            self.watch = Ref(0, done=False)
            return self.watch
        return Ref(-15)  # stop: SIGTERM'd

    def __getattr__(self, name: str) -> Method:
        return Method(self, name)


class FakeRay(types.ModuleType):
    actors: ClassVar[list[FakeActor]] = []

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        super().__init__("ray")
        self._nodes = nodes
        self.killed: list[str] = []
        self.shutdowns = 0
        FakeRay.actors = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        pass

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes

    def remote(self, cls: type) -> Any:
        ray = self

        class Options:
            def options(self, **options: Any) -> Any:
                class Remote:
                    def remote(self, replica_id: str) -> FakeActor:
                        strategy = options.get("scheduling_strategy")
                        node = getattr(strategy, "node_id", "spread")
                        actor = FakeActor(replica_id, options, node)
                        FakeRay.actors.append(actor)
                        return actor

                return Remote()

        del ray, cls
        return Options()

    def wait(self, refs: list[Ref], timeout: float) -> tuple[list[Ref], list[Ref]]:
        done = [r for r in refs if r.fut.done()]
        return done, [r for r in refs if r not in done]

    def get(self, ref: Ref, timeout: float) -> Any:
        return ref.fut.result(timeout=timeout)

    def kill(self, actor: FakeActor, no_restart: bool) -> None:
        self.killed.append(actor.replica_id)

    def shutdown(self) -> None:
        self.shutdowns += 1


class Affinity:
    def __init__(self, node_id: str, soft: bool) -> None:
        self.node_id, self.soft = node_id, soft


NODES = [
    {"NodeID": "n1", "Alive": True, "Resources": {"CPU": 4.0, "pool:gpu": 2.0}},
    {"NodeID": "n2", "Alive": True, "Resources": {"CPU": 4.0, "pool:gpu": 2.0}},
    {"NodeID": "n3", "Alive": True, "Resources": {"CPU": 4.0}},
]


@pytest.fixture
def ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay(NODES)
    strategies = types.ModuleType("ray.util.scheduling_strategies")
    strategies.NodeAffinitySchedulingStrategy = Affinity  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.util", types.ModuleType("ray.util"))
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies", strategies)
    return fake


SPEC = ReplicaSpec("chat", "m", simulate="H100:m", drain_timeout_s=7)
CFG = RayBackendConfig(pool="gpu", num_cpus=0.5, replica_host="127.0.0.1")


def test_replicas_spread_over_the_nodes_with_the_pool(ray: FakeRay) -> None:
    backend = RayBackend({"chat": CFG}, address="auto", admin_token="tok")
    handles = asyncio.run(backend.start(SPEC, 4))
    assert [a.node_id for a in ray.actors] == ["n1", "n2", "n1", "n2"]  # never n3
    opts = ray.actors[0].options
    assert opts["num_cpus"] == 0.5 and opts["resources"] == {"pool:gpu": 1.0}
    assert opts["max_restarts"] == 0 and opts["scheduling_strategy"].soft is True
    assert handles[0].url == "http://127.0.0.1:9001" and handles[0].deployment == "chat"
    name, (args, env, host, _) = ray.actors[0].calls[0]
    assert name == "launch" and host == "127.0.0.1"
    assert args[:2] == ["--model", "m"] and "--simulate" in args
    assert env["SHIPIT_REPLICA_ADMIN_TOKEN"] == "tok"  # in the environment, not the flags
    assert "tok" not in args
    # Both pool nodes are full now (2 units each): Ray's scheduler holds the fifth.
    asyncio.run(backend.start(SPEC, 1))
    assert ray.actors[-1].options["scheduling_strategy"] == "SPREAD"


def test_a_dead_replica_is_no_longer_alive_and_says_why(ray: FakeRay) -> None:
    backend = RayBackend({"chat": CFG}, address="auto")
    [a, b] = asyncio.run(backend.start(SPEC, 2))
    assert backend.alive(a) and backend.alive(b)
    # b's process exits (a crash) on n2: gone, and no longer counted on n2.
    watch_b = ray.actors[1].watch
    assert watch_b is not None
    watch_b.value = 1
    watch_b.finish()
    assert not backend.alive(b) and backend.alive(a)
    assert backend.failure(b.replica_id) == "replica process exited with status 1"
    assert [h.replica_id for h in backend.list()] == [a.replica_id]
    [b2] = asyncio.run(backend.start(SPEC, 1))
    assert ray.actors[-1].node_id == "n2"  # counted, the tie would have gone to n1
    # a's actor dies with its node n1: the replacement avoids n1, though n1 now runs none.
    watch_a = ray.actors[0].watch
    assert watch_a is not None
    watch_a.finish(RuntimeError("node n1 died"))
    assert not backend.alive(a) and backend.alive(b2)
    assert "actor or node died" in (backend.failure(a.replica_id) or "")
    asyncio.run(backend.start(SPEC, 1))
    assert ray.actors[-1].node_id == "n2"


def test_stop_drains_on_the_node_then_kills_the_actor(ray: FakeRay) -> None:
    backend = RayBackend({"chat": CFG}, address="auto")
    [h] = asyncio.run(backend.start(SPEC, 1))
    asyncio.run(backend.stop(h))
    assert ("stop", (7,)) in ray.actors[0].calls
    assert ray.killed == [h.replica_id] and not backend.alive(h)
    asyncio.run(backend.stop(h))  # idempotent
    assert ray.killed == [h.replica_id]


def test_close_stops_everything_once_and_leaves_the_cluster(ray: FakeRay) -> None:
    backend = RayBackend({"chat": CFG}, address="auto")
    asyncio.run(backend.start(SPEC, 2))

    async def close_twice() -> None:  # a fleet closes a shared backend once per deployment
        await asyncio.gather(backend.close(), backend.close())

    asyncio.run(close_twice())
    assert sorted(ray.killed) == sorted(a.replica_id for a in ray.actors)
    assert ray.shutdowns == 1


def test_spread_off_leaves_placement_to_ray(ray: FakeRay) -> None:
    cfg = RayBackendConfig(spread=False, num_gpus=1, memory_bytes=10, runtime_env={"pip": ["x"]})
    backend = RayBackend({"chat": cfg}, address="auto")
    asyncio.run(backend.start(SPEC, 1))
    opts = ray.actors[0].options
    assert "scheduling_strategy" not in opts
    assert opts["num_gpus"] == 1 and opts["memory"] == 10 and opts["runtime_env"] == {"pip": ["x"]}
