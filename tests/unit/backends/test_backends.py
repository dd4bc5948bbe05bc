"""Backends: the static and fake ones, the local one's command line, and the fleet wiring."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import pytest

import shipit.backends
from shipit.backends.base import ReplicaSpec, base_url
from shipit.backends.fake import FakeBackend
from shipit.backends.fleet import Fleet
from shipit.backends.local import LocalProcessBackend, free_port
from shipit.backends.static import StaticBackend
from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.services.registry import ReplicaRegistry


def test_base_url_strips_v1() -> None:
    assert base_url("http://h:1/v1/") == "http://h:1"
    assert base_url("http://h:1") == "http://h:1"


def test_local_command_and_free_port(tmp_path: object) -> None:
    backend = LocalProcessBackend(log_dir=str(tmp_path))
    cmd = backend.command(
        ReplicaSpec("d", "m", simulate="H100:x", extra_args=("--max-loras", "2")), 1234
    )
    assert cmd[:4] == [sys.executable, "-m", "shipit", "replica"]
    assert cmd[cmd.index("--port") + 1] == "1234" and cmd[-2:] == ["--max-loras", "2"]
    assert "--simulate" in cmd
    assert 0 < free_port() < 65536


def test_fleet_registers_local_and_external_replicas_and_drains_them() -> None:
    cfg = parse_config({"deployments": [{"replicas": 2, "replica_urls": ["http://ext:8000/v1"]}]})
    registry = ReplicaRegistry("default", clock=FakeClock(), max_concurrency=8)
    local, static = FakeBackend(), StaticBackend({"default": ["http://ext:8000/v1"]})
    fleet = Fleet(cfg.deployments, {"default": registry}, local=local, external=static)

    asyncio.run(fleet.start())
    reps = {r.replica_id: r for r in registry.records()}
    assert sorted(reps) == ["default-0", "default-1", "default-ext0"]
    assert reps["default-ext0"].url == "http://ext:8000" and reps["default-ext0"].external
    assert all(r.state is ReplicaState.STARTING for r in reps.values())
    local.dead.add("default-1")
    assert [h.replica_id for h in fleet.dead()] == ["default-1"]

    asyncio.run(fleet.stop())
    assert sorted(local.stopped) == ["default-0", "default-1"]
    assert all(r.state is ReplicaState.STOPPED for r in registry.records())
    assert static.list() == []


class RecordingRegistrar:
    """A ``Registrar`` that only writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def add(
        self,
        replica_id: str,
        url: str,
        *,
        state: ReplicaState = ReplicaState.STARTING,
        external: bool = False,
        version: str | None = None,
    ) -> None:
        self.calls.append(("add", replica_id, url, state.value, str(external)))

    def set_state(self, replica_id: str, state: ReplicaState) -> None:
        self.calls.append(("set_state", replica_id, state.value))

    def remove(self, replica_id: str) -> None:
        self.calls.append(("remove", replica_id))


def test_the_pool_starts_and_stops_one_replica_and_reports_it_to_the_registrar() -> None:
    cfg = parse_config({"deployments": [{"replicas": 0}]})
    registrar, local = RecordingRegistrar(), FakeBackend()
    fleet = Fleet(cfg.deployments, {"default": registrar}, local=local, external=StaticBackend({}))

    async def go() -> None:
        (rid,) = await fleet.start_replicas("default", 1)
        assert fleet.managed("default") == [rid] and fleet.alive("default", rid)
        local.dead.add(rid)
        assert not fleet.alive("default", rid)
        await fleet.stop_replica("default", rid)
        assert fleet.managed("default") == [] and local.stopped == [rid]

    asyncio.run(go())
    assert registrar.calls == [
        ("add", "default-0", "http://fake-default-0", "starting", "False"),
        ("set_state", "default-0", "draining"),
        ("remove", "default-0"),
    ]


def test_a_deployment_without_a_registrar_is_refused() -> None:
    cfg = parse_config({"deployments": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(ValueError, match=r"no registrar for deployment\(s\) \['b'\]"):
        Fleet(
            cfg.deployments,
            {"a": RecordingRegistrar()},
            local=FakeBackend(),
            external=FakeBackend(),
        )


def test_backends_do_not_import_the_router() -> None:
    """Backends start, stop and probe; registrations go through a ``Registrar``."""
    package = Path(shipit.backends.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "shipit.backends.base" in imported, "the scan found the package's imports"
    assert not {m for m in imported if m.startswith(("shipit.services", "shipit.gateway"))}


def test_fleet_starts_a_version_beside_the_current_one_and_adopts_it() -> None:
    from shipit.config.rollout import VersionConfig

    cfg = parse_config(
        {"deployments": [{"replicas": 1, "simulate": "H100:llama-3.1-8b", "model": "m"}]}
    )
    registry = ReplicaRegistry("default", clock=FakeClock(), max_concurrency=8)
    local = FakeBackend()
    fleet = Fleet(cfg.deployments, {"default": registry}, local=local, external=StaticBackend({}))
    asyncio.run(fleet.start())
    v2 = VersionConfig(name="v2", simulate="A100:llama-3.1-8b", replica_args=["--x"], replicas=2)
    ids = asyncio.run(fleet.start_version("default", v2))
    assert [registry.get(i).version for i in ids] == ["v2", "v2"]  # type: ignore[union-attr]
    assert {r.version for r in registry.records()} == {"v1", "v2"}
    assert (
        local.started[-1].simulate == "A100:llama-3.1-8b" and "--x" in local.started[-1].extra_args
    )
    # The autoscaler manages the current version only: the candidate is never scaled away.
    assert fleet.managed("default") == ["default-0"]
    fleet.adopt_version("default", v2)
    assert sorted(fleet.managed("default")) == sorted(ids)
    # What starts from now on runs the new version.
    asyncio.run(fleet.start_replicas("default", 1))
    assert local.started[-1].simulate == "A100:llama-3.1-8b"
    assert fleet.managed("default")[-1] == "default-3"
