"""Live placement's driver glue: demand per client region measured as request-seconds over the
window (open requests counted up to now), the snapshot given to ``policy.placement``, the live
floor of one replica, and bounds applied to each plane's deployments only when they changed
(again after a failed call). Fake clock, scripted planes; no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipit.config.fleet import parse_fleet_config
from shipit.core.decisions import MemoryLog
from shipit.services.front_door_views import ClientPlace
from shipit.services.placement_live import (
    DemandMeter,
    LivePlacement,
    PlaneEndpoint,
    plane_capacity,
    region_name,
)
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

EAST, WEST = ClientPlace(-5.0, None, "x-shipit-region"), ClientPlace(1.0, None, "x-shipit-region")
US, EU = "http://us", "http://eu"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def fleet(**control: Any) -> Any:
    plane = {"max_replicas": 6, "port": 0}
    return parse_fleet_config(
        {
            "fleet": {
                "control_plane": {"placement_interval_s": 10, "target_utilization": 0.5, **control},
                "planes": [
                    {"name": "east", "utc_offset_h": -5, **plane},
                    {"name": "west", "utc_offset_h": 1, **plane},
                ],
            }
        }
    )


def driver(clock: Clock, log: MemoryLog | None = None) -> LivePlacement:
    planes = [PlaneEndpoint("east", US, {"chat": 2}), PlaneEndpoint("west", EU, {"chat": 2})]
    return LivePlacement(fleet(), planes, now=clock, decisions=log or MemoryLog())


def test_demand_is_request_seconds_over_the_window_with_open_requests_counted_to_now() -> None:
    meter = DemandMeter(0.0)
    a = meter.opened(EAST, 0.0)
    meter.opened(EAST, 2.0)  # still open at the take
    w = meter.opened(WEST, 1.0)
    meter.closed(a, 4.0)
    meter.closed(w, 2.0)
    got = meter.take(4.0)
    # east: 4 s finished + 2 s open = 6 request-seconds over 4 s; west: 1 over 4
    assert got == {(-5.0, None): 1.5, (1.0, None): 0.25}
    # The next window counts the open request from the window's start only.
    assert meter.take(8.0) == {(-5.0, None): 1.0, (1.0, None): 0.0}


def test_region_names_and_plane_capacity() -> None:
    assert region_name((-5.0, None)) == "UTC-5"
    assert region_name((5.5, "eu")) == "UTC+5.5/eu"
    cfg = parse_fleet_config(
        {
            "fleet": {
                "planes": [
                    {
                        "name": "p",
                        "max_replicas": 50,
                        "pools": {
                            "reserved": {"usd_per_gpu_hour": 2, "max_replicas": 3},
                            "spot": {"usd_per_gpu_hour": 1, "max_replicas": 4},
                        },
                    },
                    {"name": "q", "max_replicas": 7},  # on demand, unbounded: its own cap
                ]
            }
        }
    )
    assert [plane_capacity(p) for p in cfg.planes] == [7, 7]


def test_demand_moving_between_regions_moves_the_bounds_and_keeps_the_live_floor() -> None:
    clock = Clock()
    log = MemoryLog()
    d = driver(clock, log)
    # Two east clients busy the whole window: 2 concurrent / (2 slots x 0.5) = 2 replicas.
    tokens = [d.opened(EAST), d.opened(EAST)]
    clock.t += 10
    first = d.decide(["east", "west"])
    assert d.last_demand == {"UTC-5": 2.0}
    east, west = first.target("east"), first.target("west")
    assert (east.reason_code, east.target, east.min_replicas, east.max_replicas) == (
        "assigned", 2, 1, 4,
    )  # fmt: skip
    assert (west.reason_code, west.min_replicas) == ("idle", 1)  # never under one live
    for t in tokens:
        d.closed(t)
    # The demand moves west (three clients).
    tokens = [d.opened(WEST) for _ in range(3)]
    clock.t += 10
    second = d.decide(["east", "west"])
    assert d.last_demand == {"UTC-5": 0.0, "UTC+1": 3.0}
    assert second.target("west").reason_code == "assigned"
    assert second.target("west").max_replicas == 5 > second.target("east").max_replicas
    assert second.target("east").reason_code == "idle"
    assert [e.policy for e in log.entries] == ["placement", "placement"]
    status = d.status()
    assert status["counts"] == {"placed": 2}
    assert [h["planes"]["west"]["target"] for h in status["history"]] == [1, 3]


def test_a_plane_not_serving_gets_no_demand() -> None:
    clock = Clock()
    d = driver(clock)
    d.opened(EAST)
    clock.t += 10
    decision = d.decide(["west"])
    assert decision.target("east").reason_code == "not_serving"
    assert decision.target("west").reason_code == "assigned"  # the demand spilled over


def test_bounds_are_applied_per_deployment_only_when_changed_and_again_after_a_failure() -> None:
    async def go() -> None:
        clock = Clock()
        d = driver(clock)
        planes = FakeUpstream({US: FakeReplica(), EU: FakeReplica()})
        d.opened(EAST)
        clock.t += 10
        decision = d.decide(["east", "west"])
        planes.replicas[EU].fail = "connect"
        await d.apply(decision, planes)
        calls = planes.replicas[US].admin_calls
        assert calls == [
            (
                US + "/shipit/scaling/chat",
                {
                    "min_replicas": 1,
                    "max_replicas": 3,  # 1.25 x target 1, rounded up, + 1
                    "reason": decision.target("east").reason,
                },
            )
        ]
        west = next(p for p in d.status()["planes"] if p["plane"] == "west")
        assert west["applied"] is None and "injected" in west["apply_detail"]
        planes.replicas[EU].fail = None
        await d.apply(decision, planes)  # unchanged for east: not sent; west: sent again
        assert len(planes.replicas[US].admin_calls) == 1
        assert len(planes.replicas[EU].admin_calls) == 2  # the failed try, then this one
        west = next(p for p in d.status()["planes"] if p["plane"] == "west")
        assert west["applied"] == [1, 3]

    asyncio.run(go())


@pytest.mark.parametrize(
    ("control", "field"),
    [
        ({"placement_interval_s": 0}, "placement_interval_s"),
        ({"target_utilization": 1.5}, "target_utilization"),
        ({"spot_check_interval_s": -1}, "spot_check_interval_s"),
    ],
)
def test_control_plane_settings_are_validated(control: dict[str, Any], field: str) -> None:
    from shipit.config.gateway import ConfigError

    with pytest.raises(ConfigError) as info:
        fleet(**control)
    assert f"control_plane.{field}" in info.value.message
