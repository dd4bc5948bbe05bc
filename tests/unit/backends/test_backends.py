"""Backends: the static and fake ones, the local one's command line, and the fleet wiring."""

from __future__ import annotations

import asyncio
import sys

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
