"""The multi-region fleet simulator on small fleets: failover, promotion, spot, GPU failures,
costs, determinism."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shipit.config.fleet import parse_fleet_config
from shipit.sim.fleet_setup import fleet_setup
from shipit.sim.regions import simulate_fleet

TRAFFIC = {
    "regions": [{"name": "west", "utc_offset_h": -5, "share": 1.0}],
    "replica": {"concurrency": 8, "prefill_tokens_per_s": 5000, "decode_tokens_per_s": 50},
    "ttft_slo_ms": 2000,
    "input_len": 1000,
    "output_len": 100,
}


def run(fleet: dict[str, Any], *, rps: float, hours: float, seed: int = 0) -> dict[str, Any]:
    cfg = parse_fleet_config({"fleet": {"traffic": TRAFFIC, **fleet}})
    setup = fleet_setup(cfg, rates_rps=(rps,), step_s=60.0, hours=hours, seed=seed, sample_s=60)
    return simulate_fleet(setup)


def od(price: float = 4.0, obtain_s: float = 60.0) -> dict[str, Any]:
    return {"on_demand": {"usd_per_gpu_hour": price, "obtain_delay_s": obtain_s}}


TWO_PLANES = [
    {"name": "near", "utc_offset_h": -5, "pools": od()},
    {"name": "far", "utc_offset_h": 1, "pools": od()},
]


def test_a_plane_outage_moves_its_traffic_to_the_other_plane() -> None:
    calm = run({"planes": TWO_PLANES}, rps=5, hours=3)
    assert calm["routed_to"].get("west->far", 0) == 0  # the near plane has room: all stay
    assert calm["failovers"] == []
    out = run(
        {
            "planes": TWO_PLANES,
            "simulation": {"outages": [{"plane": "near", "at_h": 1, "for_h": 1}]},
        },
        rps=5,
        hours=3,
    )
    codes = [(f["plane"], f["reason_code"]) for f in out["failovers"]]
    assert codes == [("near", "out"), ("near", "back")]
    assert 1.0 < out["failovers"][0]["t_h"] < 1.01  # three failed 1 s probes
    s = out["series"]
    during = [i for i, t in enumerate(s["t_h"]) if 1.2 <= t <= 1.9]
    assert all(not s["serving:near"][i] for i in during)
    assert all(s["slo_attainment"][i] > 0.95 for i in during)  # the far plane serves them
    # roughly the hour's traffic (5/s) went far, the rest stayed near
    assert 0.8 * 5 * 3600 < out["routed_to"]["west->far"] < 1.2 * 5 * 3600
    assert out["failed"] > 0  # sent to the near plane before the probes took it out


def test_active_passive_promotes_the_standby_and_keeps_it_after_the_active_returns() -> None:
    planes = [
        {"name": "near", "utc_offset_h": -5, "pools": od()},
        {"name": "far", "utc_offset_h": 1, "role": "standby", "min_replicas": 2, "pools": od()},
    ]
    calm = run({"posture": "active-passive", "planes": planes}, rps=5, hours=2)
    assert calm["routed_to"].get("west->far", 0) == 0  # a standby serves nothing
    assert calm["replicas_end"]["far"]["on_demand"] == 2  # kept warm at its floor
    out = run(
        {
            "posture": "active-passive",
            "planes": planes,
            "simulation": {"outages": [{"plane": "near", "at_h": 0.5, "for_h": 0.5}]},
        },
        rps=5,
        hours=2,
    )
    codes = [(f["plane"], f["reason_code"]) for f in out["failovers"]]
    assert codes == [
        ("near", "out"),
        ("far", "promoted"),
        ("near", "back"),
        ("near", "returned_as_standby"),
    ]
    s = out["series"]
    late = [i for i, t in enumerate(s["t_h"]) if t >= 1.2]
    assert all(s["serving:far"][i] and not s["serving:near"][i] for i in late)
    assert out["routed_to"]["west->far"] > 0.9 * 5 * 3600 * 1.5  # from the promotion on


SPOT_PLANE = {
    "name": "near",
    "utc_offset_h": -5,
    "min_replicas": 4,
    "max_replicas": 4,
    "pools": {
        "on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 200},
        "spot": {
            "usd_per_gpu_hour": 1.0,
            "obtain_delay_s": 100,
            "preemptions_per_hour": 0.2,
            "notice_s": 60,
        },
    },
}


def test_spot_preemptions_drain_and_are_replaced_on_demand_while_spot_is_short() -> None:
    # One pre-emption among four spot replicas is a wave (0.4 expected in the 30 min window)
    out = run({"gpu_failures_per_hour": 0, "planes": [SPOT_PLANE]}, rps=1, hours=12, seed=2)
    assert out["preemptions"] >= 2
    choices = out["pool_choices"]
    assert choices["spot_cheaper"] == 4  # the warm start: spot is cheaper
    assert choices["spot_short"] == out["preemptions"]  # every replacement went on demand
    assert out["recoveries"] >= out["preemptions"] - 1  # the last may still be starting
    # On demand obtains in 200 s, started at the notice: ready 140 s after the pre-emption.
    assert out["mean_recovery_s"] == pytest.approx(140.0)
    end = out["replicas_end"]["near"]
    assert end["spot"] + end["on_demand"] == 4
    assert end["on_demand"] == min(out["preemptions"], 4)


def test_a_scheduled_spot_shortage_buys_on_demand() -> None:
    plane = {**SPOT_PLANE, "min_replicas": 0, "max_replicas": 50}
    plane["pools"] = {
        "on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 60},
        "spot": {"usd_per_gpu_hour": 1.0, "obtain_delay_s": 60},
    }
    fleet = {
        "gpu_failures_per_hour": 0,
        "planes": [plane],
        "simulation": {"spot_shortages": [{"plane": "near", "at_h": 0, "for_h": 10}]},
    }
    out = run(fleet, rps=5, hours=1)
    assert out["replicas_end"]["near"]["spot"] == 0
    assert out["replicas_end"]["near"]["on_demand"] > 0
    assert set(out["pool_choices"]) == {"spot_full"}


def test_gpu_failures_come_at_the_configured_rate_and_are_cordoned_and_replaced() -> None:
    rate = 1e-3  # per GPU-hour, 50x the default to see many in a short run
    plane = {
        "name": "near",
        "utc_offset_h": -5,
        "min_replicas": 500,
        "max_replicas": 500,
        "pools": od(obtain_s=120),
    }
    out = run(
        {
            "gpu_failures_per_hour": rate,
            "gpus_per_replica": 8,
            "planes": [plane],
            # a fixed fleet: a coarse clock is enough (and the test stays quick)
            "simulation": {"tick_s": 60, "autoscale_interval_s": 600},
        },
        rps=1,
        hours=40,
        seed=7,
    )
    gpu_hours = out["gpu_hours_by_plane"]["near"]["on_demand"]
    assert gpu_hours == pytest.approx(500 * 8 * 40, rel=0.01)
    expected = gpu_hours * rate  # 160
    # Poisson: within three standard deviations (about +-24%) with this seed.
    assert abs(out["gpu_failures"] - expected) < 3 * math.sqrt(expected)
    # A hardware error cordons its node, up to a quarter of the nodes cordoned at once (the
    # node health policy's cap; the simulator does not repair nodes).
    assert out["cordons"] > 0.75 * out["gpu_failures"]
    assert out["cordons"] + out["cordons_held"] == out["gpu_failures"]
    assert out["recoveries"] >= out["gpu_failures"] - 2
    # detected after 60 s, replaced in 120 s
    assert out["mean_recovery_s"] == pytest.approx(180.0, abs=10)


def test_costs_add_up_by_hand_on_a_tiny_fleet() -> None:
    plane = {
        "name": "near",
        "utc_offset_h": -5,
        "min_replicas": 3,
        "max_replicas": 3,
        "pools": {
            "reserved": {"usd_per_gpu_hour": 2.0, "max_replicas": 2},
            "on_demand": {"usd_per_gpu_hour": 5.0, "obtain_delay_s": 60},
        },
    }
    out = run(
        {"gpu_failures_per_hour": 0, "gpus_per_replica": 2, "planes": [plane]}, rps=1, hours=2
    )
    # 2 reserved replicas x 2 GPUs x $2 x 2 h, and 1 on demand x 2 GPUs x $5 x 2 h
    assert out["cost_usd_by_pool"] == {"reserved": 16.0, "on_demand": 20.0}
    assert out["cost_usd"] == 36.0 and out["cost_usd_per_hour"] == 18.0


def test_an_idle_reservation_is_still_paid() -> None:
    plane = {
        "name": "near",
        "utc_offset_h": -5,
        "min_replicas": 1,
        "max_replicas": 1,
        "pools": {"reserved": {"usd_per_gpu_hour": 2.0, "max_replicas": 10}},
    }
    out = run({"gpu_failures_per_hour": 0, "planes": [plane]}, rps=0.1, hours=1)
    assert out["replicas_end"]["near"] == {"reserved": 1}
    assert out["cost_usd"] == 20.0  # 10 reserved GPUs x $2 x 1 h, one of them used


def test_same_seed_same_run_other_seed_other_draws() -> None:
    fleet = {"planes": [{**SPOT_PLANE, "max_replicas": 20}]}
    a = run(fleet, rps=3, hours=2, seed=1)
    b = run(fleet, rps=3, hours=2, seed=1)
    c = run(fleet, rps=3, hours=2, seed=2)
    assert a == b
    assert a["requests"] != c["requests"]


def test_a_full_nearest_plane_spills_to_the_next() -> None:
    small = {"name": "near", "utc_offset_h": -5, "max_replicas": 3, "pools": od()}
    out = run({"planes": [small, TWO_PLANES[1]]}, rps=20, hours=1)
    assert out["routing"]["spilled"] > 0
    assert out["routed_to"]["west->far"] > 0.5 * out["requests"]  # 3 replicas take ~4/s
    assert out["peak_replicas"]["near"] == 3
    assert out["slo_attainment"] > 0.95  # 30 ms further is still inside the SLO


def test_the_fleet_decisions_are_logged_and_replay_to_the_same_answers() -> None:
    from shipit.core.decisions import MemoryLog, entry_line, read_entries
    from shipit.policy import failover, placement, replica_faults
    from shipit.sim.regions import FleetSim

    cfg = parse_fleet_config(
        {
            "fleet": {
                "traffic": TRAFFIC,
                "gpu_failures_per_hour": 0.01,
                "planes": [{**SPOT_PLANE, "max_replicas": 10}, TWO_PLANES[1]],
                "simulation": {"outages": [{"plane": "near", "at_h": 0.5, "for_h": 0.2}]},
            }
        }
    )
    log = MemoryLog()
    FleetSim(fleet_setup(cfg, rates_rps=(2.0,), step_s=60, hours=3, seed=4), log=log).run()
    policies = {e.policy for e in log.entries}
    assert policies == {"placement", "failover", "replica_faults"}
    back = list(read_entries(entry_line(e) for e in log.entries))
    assert back == log.entries
    for e in back:
        if e.policy == "placement":
            assert placement.decide(placement.PlacementConfig(), e.snapshot) == e.decision
        elif e.policy == "failover":
            assert failover.decide(failover.FailoverPolicyConfig(), e.snapshot, e.state)[0] == (
                e.decision
            )
        else:
            d, _ = replica_faults.decide(replica_faults.FaultConfig(), e.snapshot, e.state)
            assert d == e.decision
