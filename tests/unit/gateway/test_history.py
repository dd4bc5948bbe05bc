"""The gateway's counter history: rates over the window asked for, not the last second."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.samples import Sample

from shipit.core.clock import FakeClock
from shipit.gateway.history import CounterHistory
from shipit.telemetry import catalog as cat


def test_a_burst_ten_seconds_ago_still_shows_in_a_ten_second_window() -> None:
    registry = CollectorRegistry()
    name = cat.REQUESTS.name.removesuffix("_total")
    requests = Counter(name, "requests", ["deployment", "status"], registry=registry)

    def read() -> list[Sample]:
        return [s for fam in registry.collect() for s in fam.samples]

    clock = FakeClock(0.0)
    history = CounterHistory(read, clock.now)
    assert history.window(10) is None
    history.sample()
    requests.labels(deployment="chat", status="200").inc(30)  # a burst, then nothing
    for _ in range(10):
        clock.advance(1.0)
        history.sample()
    stats = history.window(10)
    assert stats is not None
    assert stats["seconds"] == 10.0
    assert stats["deployments"]["chat"]["requests_per_s"] == 3.0
    one_second = history.window(1)
    assert one_second is not None and one_second["deployments"]["chat"]["requests_per_s"] == 0.0


def test_status_answers_the_window_asked_for() -> None:
    import asyncio

    from shipit.config.gateway import parse_config
    from shipit.gateway.app import create_gateway
    from support.asgi import call

    cfg = parse_config({"alerts": {"enabled": False}, "deployments": [{"replicas": 0}]})
    clock = FakeClock(0.0)
    gw = create_gateway(cfg, clock=clock, monitor=False)
    gw.history.sample()
    clock.advance(5.0)
    gw.history.sample()

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        plain = (await call(gw, "GET", "/shipit/status")).json()
        windowed = (await call(gw, "GET", "/shipit/status?window_s=10")).json()
        return plain, windowed

    plain, windowed = asyncio.run(go())
    assert "window" not in plain
    window = windowed["window"]
    assert isinstance(window, dict) and window["seconds"] == 5.0
