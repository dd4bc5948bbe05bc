"""The gateway hands the rollout controller collectors in its own registry: a started rollout
shows on the gateway's /metrics exposition."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shipit.config.gateway import parse_config
from shipit.config.rollout import VersionConfig
from shipit.core.clock import FakeClock
from shipit.gateway.app import create_gateway
from shipit.services.audit import AuditLog
from shipit.services.keystore import KeyFile, KeyStore
from shipit.services.upstream_fake import FakeUpstream


class Pool:
    async def start_version(self, deployment: str, version: VersionConfig) -> list[str]:
        return []

    async def stop_replica(self, deployment: str, replica_id: str) -> None:
        return None

    def adopt_version(self, deployment: str, version: VersionConfig) -> None:
        return None


def test_a_started_rollout_is_on_the_gateways_metrics(tmp_path: Path) -> None:
    cfg = parse_config({"deployments": [{"name": "chat", "model": "m", "replicas": 0}]})
    gw = create_gateway(
        cfg,
        clock=FakeClock(),
        upstream_factory=lambda: FakeUpstream({}),
        monitor=False,
        versions=Pool(),
        rollout_home=tmp_path,
        keys=KeyStore(KeyFile()),
        audit=AuditLog(None),
    )
    assert gw.rollouts is not None
    before = gw.metrics.render().decode()
    assert 'shipit_rollout_state{deployment="chat"' not in before
    asyncio.run(gw.rollouts.start({"version": "v2", "replicas": 1}))
    text = gw.metrics.render().decode()
    assert 'shipit_rollout_state{deployment="chat",state="warming"} 1.0' in text
    assert 'shipit_rollout_traffic_share_ratio{deployment="chat",version="v1"} 1.0' in text
