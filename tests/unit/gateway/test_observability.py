"""The gateway's alert loop reads the gateway's own registry; active alerts appear under
``alerts`` in ``/shipit/status``; webhook and Alertmanager sinks are built from config."""

from __future__ import annotations

import asyncio
import time

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import create_gateway, running
from shipit.services.alert_sinks import AlertmanagerSink, WebhookSink
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

T0 = 1_700_000_000.0


def test_status_has_alerts_and_the_loop_reads_the_gateway_registry() -> None:
    cfg = parse_config(
        {
            "alerts": {"webhook_url": "http://hook", "alertmanager_url": "http://am:9093"},
            "deployments": [{"model": "m", "replicas": 0, "simulate": "H100:llama-3.1-8b"}],
        }
    )
    upstream = FakeUpstream({"http://a": FakeReplica()})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    assert gw.alerts is not None
    sinks = gw.alerts._sinks
    assert [type(s) for s in sinks] == [WebhookSink, AlertmanagerSink]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def go() -> dict[str, object]:
        async with running(gw):
            assert gw.alerts is not None
            gw.alerts.tick(T0)
            for _ in range(6):
                assert (await call(gw, "POST", "/v1/chat/completions", body)).status == 200
            gw.alerts.tick(T0 + 10)
            status: dict[str, object] = (await call(gw, "GET", "/shipit/status")).json()
            metrics = (await call(gw, "GET", "/metrics")).body.decode()
            assert 'shipit_alert_active{alert="baseline_deviation",deployment="default"' in metrics
            assert 'shipit_cost_per_hour_usd{deployment="default"}' in metrics
            return status

    status = asyncio.run(go())
    assert status["alerts"] == []  # nothing learned yet, nothing raised
    stats = gw.alerts.latest["default"]
    assert stats.requests_per_s == 0.6 and stats.latency_samples == 6


def test_alerts_can_be_switched_off() -> None:
    cfg = parse_config({"alerts": {"enabled": False}, "deployments": [{"replicas": 0}]})
    gw = create_gateway(cfg, clock=FakeClock(), monitor=False)
    assert gw.alerts is None and gw.status()["alerts"] == []


def test_status_says_when_the_gateway_started_and_for_how_long_it_has_run() -> None:
    cfg = parse_config({"alerts": {"enabled": False}, "deployments": [{"replicas": 0}]})
    clock = FakeClock(100.0)
    before = time.time()
    gw = create_gateway(cfg, clock=clock, monitor=False)
    after = time.time()
    clock.advance(42.5)
    status = gw.status()
    assert status["uptime_s"] == 42.5
    assert before - 0.001 <= status["started_at_s"] <= after + 0.001
