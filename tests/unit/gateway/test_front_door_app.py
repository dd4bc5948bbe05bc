"""The global front door in-process: probes and failover, routing by the client's place,
retries on the next plane before the first byte, mid-stream failures reported, the answers'
headers, /shipit/fleet and /metrics. Scripted planes (``FakeUpstream``), no sockets."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from shipit.config.fleet import parse_fleet_config
from shipit.config.gateway import parse_config
from shipit.gateway.front_door import FrontDoorApp
from shipit.services.front_door import FrontDoor, PlaneTarget
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

US, EU = "http://us", "http://eu"


def sync(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Planes(FakeUpstream):
    """Each plane's gateway: ``/shipit/status`` from ``ready``/``in_flight``; a plane removed
    from ``replicas`` refuses connections (a killed process)."""

    def __init__(self, replicas: Mapping[str, FakeReplica]) -> None:
        super().__init__(replicas)
        self.ready = dict.fromkeys(replicas, 1)
        self.in_flight = dict.fromkeys(replicas, 0)

    async def get(
        self, url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        if url.endswith("/shipit/status"):
            base = url.removesuffix("/shipit/status")
            self._find(url)  # refused when the plane is gone
            reps = [{"state": "ready", "in_flight": self.in_flight[base]}] * self.ready[base]
            body = {"deployments": [{"name": "chat", "queue_depth": 0, "replicas": reps}]}
            return 200, json.dumps(body).encode()
        return await super().get(url, timeout_s=timeout_s, headers=headers)


def fleet(posture: str = "active-active") -> Any:
    standby = posture == "active-passive"
    return parse_fleet_config(
        {
            "fleet": {
                "posture": posture,
                "failover": {"probe_interval_s": 60, "fail_after": 2, "recover_after": 2},
                "planes": [
                    {"name": "us-east", "utc_offset_h": -5, "residency": ["us"]},
                    {
                        "name": "eu-west",
                        "utc_offset_h": 1,
                        "residency": ["eu"],
                        "role": "standby" if standby else "active",
                    },
                ],
            }
        }
    )


def door(planes: Planes, posture: str = "active-active") -> FrontDoor:
    cfg = fleet(posture)
    targets = [
        PlaneTarget(p.name, url, p.utc_offset_h, p.role, frozenset(p.residency), {"chat": 2})
        for p, url in zip(cfg.planes, (US, EU), strict=True)
    ]
    clock = iter(float(i) for i in range(10_000))
    return FrontDoor(
        cfg, targets, default_offset_h=0.0, now=lambda: next(clock), upstream=lambda: planes
    )


def replicas() -> dict[str, FakeReplica]:
    return {US: FakeReplica(), EU: FakeReplica()}


async def started(d: FrontDoor) -> FrontDoorApp:
    app = FrontDoorApp(d)
    await d.start()
    return app


@sync
async def test_routes_to_the_clients_nearest_plane_and_says_so() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    try:
        us = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        eu = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-client-utc-offset": "2"}
        )
    finally:
        await d.stop()
    assert (us.status, us.headers["x-shipit-plane"], us.headers["x-shipit-global-route"]) == (
        200,
        "us-east",
        "nearest",
    )
    assert eu.headers["x-shipit-plane"] == "eu-west"
    assert us.body.endswith(b"data: [DONE]\n\n")
    assert [u.split("/v1")[0] for u in planes.opened] == [US, EU]


@sync
async def test_a_full_plane_spills_to_the_other() -> None:
    planes = Planes(replicas())
    planes.in_flight[US] = 2  # 1 ready x 2 slots: full
    d = door(planes)
    app = await started(d)
    try:
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
    finally:
        await d.stop()
    assert (r.headers["x-shipit-plane"], r.headers["x-shipit-global-route"]) == (
        "eu-west",
        "spilled",
    )


@sync
async def test_a_plane_refusing_connections_before_the_first_byte_is_retried_on_the_next() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    planes.replicas[US].fail = "connect"  # dies after the probe said it was fine
    try:
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        metrics = d.render_metrics().decode()
    finally:
        await d.stop()
    assert r.status == 200 and r.headers["x-shipit-plane"] == "eu-west"
    assert r.body.endswith(b"data: [DONE]\n\n")
    assert 'shipit_front_door_retries_total{cause="connect",plane="us-east"} 1.0' in metrics
    # counted under the plane that served and the reason of the first choice
    assert (
        'shipit_front_door_requests_total{plane="eu-west",reason="nearest",status="200"} 1.0'
        in metrics
    )


@sync
async def test_a_503_from_a_plane_goes_to_the_next_plane_but_a_400_is_relayed() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    try:
        planes.replicas[US].status = 503
        moved = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        planes.replicas[US].status = 400
        relayed = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
    finally:
        await d.stop()
    assert (moved.status, moved.headers["x-shipit-plane"]) == (200, "eu-west")
    assert (relayed.status, relayed.headers["x-shipit-plane"]) == (400, "us-east")


@sync
async def test_every_plane_failing_is_a_503_naming_each_failure() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    planes.replicas[US].fail = planes.replicas[EU].fail = "connect"
    try:
        r = await call(app, "POST", "/v1/chat/completions", CHAT)
    finally:
        await d.stop()
    assert r.status == 503 and r.headers["x-shipit-global-route"] == "no_plane"
    msg = r.json()["error"]["message"]
    assert "plane us-east failed before answering" in msg and "plane eu-west" in msg


@sync
async def test_a_plane_failing_mid_stream_ends_the_stream_with_an_error_event() -> None:
    planes = Planes(replicas())
    planes.replicas[US].break_after_chunks = 1
    d = door(planes)
    app = await started(d)
    try:
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        metrics = d.render_metrics().decode()
    finally:
        await d.stop()
    assert r.status == 200 and r.complete  # the 200 was sent: the error is an SSE event
    events = [e for e in r.body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert events[-2].startswith("data: ")
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert (error["code"], error["type"]) == ("upstream_error", "server_error")
    assert "plane us-east failed mid-stream" in error["message"]
    assert planes.opened == [US + "/v1/chat/completions"]  # started: never sent again
    assert 'shipit_front_door_midstream_errors_total{plane="us-east"} 1.0' in metrics


@sync
async def test_a_bad_region_header_is_a_400_naming_it() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    try:
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "mars"}
        )
    finally:
        await d.stop()
    assert r.status == 400 and r.json()["error"]["param"] == "x-shipit-region"
    assert planes.opened == []


@sync
async def test_residency_keeps_a_request_in_its_planes() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    planes.replicas[EU].fail = "connect"
    try:
        r = await call(
            app,
            "POST",
            "/v1/chat/completions",
            CHAT,
            headers={"x-shipit-region": "us-east", "x-shipit-residency": "eu"},
        )
    finally:
        await d.stop()
    assert r.status == 503  # eu-west failed and us-east is outside eu: never sent there
    assert all(u.startswith(EU) for u in planes.opened)


@sync
async def test_failed_probes_take_a_plane_out_and_health_and_fleet_say_so() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)  # probe 1: both fine
    del planes.replicas[US]
    try:
        await d.probe_round()
        assert d.serving() == ("us-east", "eu-west")  # one failed probe is not an outage
        await d.probe_round()
        assert d.serving() == ("eu-west",)
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        fleet_view = (await call(app, "GET", "/shipit/fleet")).json()
        health = await call(app, "GET", "/health")
        metrics = d.render_metrics().decode()
    finally:
        await d.stop()
    assert (
        r.headers["x-shipit-plane"] == "eu-west" and r.headers["x-shipit-global-route"] == "nearest"
    )
    assert planes.opened == [EU + "/v1/chat/completions"]  # no attempt on the plane that is out
    (change,) = fleet_view["changes"]
    assert (change["plane"], change["change"]) == ("us-east", "out")
    assert "2 failed probes in a row" in change["reason"]
    us = next(p for p in fleet_view["planes"] if p["name"] == "us-east")
    assert (us["up"], us["serving"], us["last_probe"]["ok"]) == (False, False, False)
    assert fleet_view["routes"][-1]["plane"] == "eu-west"
    assert health.status == 200 and health.json() == {"serving": ["eu-west"]}
    assert 'shipit_front_door_failovers_total{change="out",plane="us-east"} 1.0' in metrics
    assert 'shipit_front_door_plane_serving{plane="us-east"} 0.0' in metrics


@sync
async def test_active_passive_standby_gets_nothing_until_promoted() -> None:
    planes = Planes(replicas())
    d = door(planes, "active-passive")
    app = await started(d)
    try:
        before = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "eu-west"}
        )
        del planes.replicas[US]
        await d.probe_round()
        await d.probe_round()
        after = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "eu-west"}
        )
        fleet_view = (await call(app, "GET", "/shipit/fleet")).json()
    finally:
        await d.stop()
    assert before.headers["x-shipit-plane"] == "us-east"  # the standby is nearer, yet idle
    assert after.headers["x-shipit-plane"] == "eu-west"
    changes = {(c["plane"], c["change"]) for c in fleet_view["changes"]}
    assert changes == {("us-east", "out"), ("eu-west", "promoted")}
    eu = next(p for p in fleet_view["planes"] if p["name"] == "eu-west")
    assert (eu["configured_role"], eu["role"], eu["promoted"]) == ("standby", "active", True)


@sync
async def test_no_serving_plane_is_a_503_on_health_and_requests() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    planes.replicas.clear()
    try:
        await d.probe_round()
        await d.probe_round()
        health = await call(app, "GET", "/health")
        r = await call(app, "POST", "/v1/chat/completions", CHAT)
    finally:
        await d.stop()
    assert health.status == 503
    assert r.status == 503 and "not serving" in r.json()["error"]["message"]


@sync
async def test_a_client_that_leaves_aborts_the_planes_request() -> None:
    planes = Planes(replicas())
    planes.replicas[US].hold = asyncio.Event()  # the plane holds its answer
    d = door(planes)
    app = await started(d)
    gone = asyncio.Event()
    try:
        task = asyncio.ensure_future(
            call(
                app,
                "POST",
                "/v1/chat/completions",
                CHAT,
                headers={"x-shipit-region": "us-east"},
                disconnect=gone,
            )
        )
        for _ in range(100):
            if planes.opened:
                break
            await asyncio.sleep(0.01)
        gone.set()
        await asyncio.wait_for(task, 5)
    finally:
        await d.stop()
    assert planes.replicas[US].aborted == 1
    assert d.planes["us-east"].open == 0  # its slot given back
    metrics = d.render_metrics().decode()
    assert (
        'shipit_front_door_requests_total{plane="us-east",reason="nearest",status="499"} 1.0'
        in metrics
    )


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/nope", 404), ("PUT", "/v1/chat/completions", 405)]
)
@sync
async def test_unknown_paths_and_methods(method: str, path: str, status: int) -> None:
    d = door(Planes(replicas()))
    app = await started(d)
    try:
        r = await call(app, method, path)
    finally:
        await d.stop()
    assert r.status == status


@sync
async def test_models_come_from_a_serving_plane() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    try:
        r = await call(app, "GET", "/v1/models")
    finally:
        await d.stop()
    assert r.status == 200 and r.headers["x-shipit-plane"] == "us-east"
    assert r.json()["data"][0]["id"] == "base"


@sync
async def test_a_body_over_the_limit_is_a_413_and_goes_nowhere() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = FrontDoorApp(d, parse_config({"gateway": {"limits": {"max_body_bytes": 1024}}}))
    await d.start()
    try:
        r = await call(app, "POST", "/v1/chat/completions", b"x" * 2048)
    finally:
        await d.stop()
    assert r.status == 413 and "1024 bytes" in r.json()["error"]["message"]
    assert planes.opened == []


@sync
async def test_a_plane_that_answers_again_is_back_after_recover_after_probes() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    us = planes.replicas.pop(US)
    try:
        await d.probe_round()
        await d.probe_round()
        assert d.serving() == ("eu-west",)
        planes.replicas[US] = us
        await d.probe_round()
        assert d.serving() == ("eu-west",)  # one good answer is not a recovery
        await d.probe_round()
        r = await call(
            app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "us-east"}
        )
        changes = [(c["plane"], c["change"]) for c in d.status()["changes"]]
    finally:
        await d.stop()
    assert d.serving() == ("us-east", "eu-west")
    assert r.headers["x-shipit-plane"] == "us-east"
    assert changes == [("us-east", "out"), ("us-east", "back")]


@sync
async def test_placement_counts_demand_by_client_region_and_sets_the_planes_bounds() -> None:
    planes = Planes(replicas())
    d = door(planes)
    app = await started(d)
    try:
        for _ in range(3):
            r = await call(
                app, "POST", "/v1/chat/completions", CHAT, headers={"x-shipit-region": "eu-west"}
            )
            assert r.status == 200
        await d.place()
        fleet_view = (await call(app, "GET", "/shipit/fleet")).json()
        metrics = (await call(app, "GET", "/metrics")).body.decode()
    finally:
        await d.stop()
    placed = fleet_view["placement"]
    assert placed["reason_code"] == "placed"
    assert set(placed["demand_replicas"]) == {"UTC+1"} and placed["demand_replicas"]["UTC+1"] > 0
    by_plane = {p["plane"]: p for p in placed["planes"]}
    assert by_plane["eu-west"]["reason_code"] == "assigned"
    assert by_plane["us-east"]["reason_code"] == "idle"
    assert by_plane["eu-west"]["applied"] == [
        by_plane["eu-west"]["min_replicas"],
        by_plane["eu-west"]["max_replicas"],
    ]
    (url, payload) = planes.replicas[EU].admin_calls[-1]
    assert url == EU + "/shipit/scaling/chat"
    assert payload["reason"] == by_plane["eu-west"]["reason"]
    assert 'shipit_front_door_placements_total{reason="placed"} 1.0' in metrics
    assert 'shipit_front_door_plane_bounds{bound="min",plane="us-east"} 1.0' in metrics
    assert 'shipit_front_door_region_demand_replicas{region="UTC+1"}' in metrics
