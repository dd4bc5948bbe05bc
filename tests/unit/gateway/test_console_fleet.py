"""The console under the gateway: ``/ui`` on when asked, the fleet API's snapshot (replicas
with state, version, pool, region and KV use; queue; the latency series; autoscaling), who may
read what with keys on, and the counter history cut into steps. In-process, fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.samples import Sample

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway
from shipit.gateway.history import CounterHistory
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key
from shipit.telemetry import catalog as cat
from support.asgi import Result, call


def gateway(
    *, console: bool = True, keys: KeyStore | None = None, host: str = "127.0.0.1"
) -> Gateway:
    cfg = parse_config(
        {
            "gateway": {"host": host},
            "alerts": {"enabled": False},
            "deployments": [
                {"name": "chat", "model": "m", "replicas": 0, "slo": {"ttft_p99_ms": 500}}
            ],
        }
    )
    gw = create_gateway(cfg, clock=FakeClock(100.0), monitor=False, console=console, keys=keys)
    router = gw.routers["chat"]
    router.add_replica("r1", "http://user:secret@10.0.0.1:8000", state=ReplicaState.READY)
    router.add_replica("r2", "http://10.0.0.2:8000", state=ReplicaState.UNHEALTHY)
    return gw


def ask(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> Result:
    return asyncio.run(call(gw, "GET", path, headers=headers))


def test_the_fleet_api_shows_each_replica_as_the_router_sees_it() -> None:
    gw = gateway()
    gw.routers["chat"].registry.update_load("r1", queue_depth=3, kv_usage=0.25)
    gw.history.sample()
    for _ in range(5):
        gw.metrics.request_done("chat", 200, "round_robin")
    gw.clock.advance(5.0)  # type: ignore[attr-defined]
    gw.history.sample()
    res = ask(gw, "/ui/api/fleet?window_s=10&step_s=1")
    assert res.status == 200
    data = res.json()
    (dep,) = data["deployments"]
    assert dep["name"] == "chat" and dep["model"] == "m"
    assert dep["slo"] == {"ttft_p99_ms": 500.0, "tpot_p99_ms": None}
    reps = {r["id"]: r for r in dep["replicas"]}
    assert reps["r1"]["state"] == "ready" and reps["r2"]["state"] == "unhealthy"
    assert reps["r1"]["kv_usage"] == 0.25 and reps["r1"]["queue_depth"] == 3
    assert reps["r1"]["pool"] == "on_demand" and reps["r1"]["region"] == "local"
    assert "secret" not in reps["r1"]["url"]
    assert dep["window"]["requests_per_s"] == 1.0
    assert [(p["t_s"], p["requests_per_s"]) for p in dep["series"]] == [(0.0, 1.0)]
    assert data["rollouts"] == [] and data["alerts"] == []


def test_a_bad_fleet_parameter_is_a_400_with_its_range() -> None:
    res = ask(gateway(), "/ui/api/fleet?window_s=-1")
    assert res.status == 400
    assert res.json()["error"]["message"] == "window_s must be seconds from 1 to 900, got '-1'"


def test_console_off_leaves_ui_unserved() -> None:
    assert ask(gateway(console=False), "/ui/").status == 404
    assert ask(gateway(console=True), "/ui/").status == 200


def _keys() -> tuple[KeyStore, str, str]:
    kf = KeyFile()
    kf.tenants["acme"] = Tenant(name="acme")
    kf.tenants["ops"] = Tenant(name="ops")
    kf, user = new_key(kf, "acme", "user")
    kf, admin = new_key(kf, "ops", "admin")
    return KeyStore(kf), user, admin


def test_with_keys_pages_are_open_the_planner_needs_a_key_and_the_fleet_an_admin(
    tmp_path: Path,
) -> None:
    store, user, admin = _keys()
    gw = gateway(keys=store, host="0.0.0.0")

    def status(path: str, key: str | None = None) -> int:
        return ask(gw, path, {"authorization": f"Bearer {key}"} if key else None).status

    vram = "/ui/api/vram?model=llama-3.1-8b&gpu=h100"
    assert [status("/ui/"), status("/ui/static/fleet.js"), status("/ui/api/catalog")] == [200] * 3
    assert [status(vram), status(vram, user)] == [401, 200]
    assert [status("/ui/api/fleet"), status("/ui/api/fleet", user)] == [401, 403]
    assert status("/ui/api/fleet", admin) == 200


def test_history_series_cuts_the_window_into_steps() -> None:
    registry = CollectorRegistry()
    name = cat.REQUESTS.name.removesuffix("_total")
    requests = Counter(name, "requests", ["deployment", "status"], registry=registry)

    def read() -> list[Sample]:
        return [s for fam in registry.collect() for s in fam.samples]

    clock = FakeClock(0.0)
    history = CounterHistory(read, clock.now)
    assert history.series(60, 5) == {}
    requests.labels(deployment="chat", status="200")  # at 0 from the start, as the gateway's
    for second in range(20):  # a sample each second, t = 0 .. 19
        clock.advance(1.0 if second else 0.0)
        if second >= 10:
            requests.labels(deployment="chat", status="200").inc(2)  # 2 req/s from t=10
        history.sample()
    points: list[dict[str, Any]] = history.series(60, 5)["chat"]
    assert [p["t_s"] for p in points] == [-10.0, -5.0, 0.0]  # steps end at 9, 14 and 19 s
    assert [p["requests_per_s"] for p in points] == [0.0, 2.0, 2.0]
    assert [p["t_s"] for p in history.series(6, 5)["chat"]] == [-5.0, 0.0]
