"""fleet.yaml validation: clear errors for what a user gets wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipit.config.fleet import load_fleet_config, parse_fleet_config
from shipit.config.gateway import ConfigError


def test_a_two_region_fleet_parses_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "fleet:\n  planes:\n    - {name: us-east, utc_offset_h: -5}\n"
        "    - name: eu-west\n      utc_offset_h: 1\n      residency: [eu]\n"
        "      pools: {spot: {usd_per_gpu_hour: 1.2, preemptions_per_hour: 0.05, notice_s: 30}}\n"
    )
    fleet = load_fleet_config(path)
    assert fleet.posture == "active-active" and fleet.ms_per_time_zone == 5.0
    assert fleet.gpu_failures_per_hour == pytest.approx(2e-5)
    assert fleet.plane("eu-west").pools.spot is not None
    assert fleet.plane("us-east").pools.on_demand is not None  # the default pool


@pytest.mark.parametrize(
    ("fleet", "says"),
    [
        ({"planes": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"planes": [{"name": "a", "role": "standby"}]}, "no plane has role: active"),
        (
            {"planes": [{"name": "a"}, {"name": "b", "role": "standby"}]},
            "need posture: active-passive",
        ),
        ({"posture": "active-passive", "planes": [{"name": "a"}]}, "role: standby to promote"),
        ({"planes": [{"name": "a", "min_replicas": 5, "max_replicas": 2}]}, "above max_replicas=2"),
        (
            {
                "planes": [
                    {"name": "a", "pools": {"on_demand": {"usd_per_gpu_hour": 3, "notice_s": 30}}}
                ]
            },
            "spot only",
        ),
        ({"planes": [{"name": "a", "zone": "x"}]}, "planes.0.zone: unknown field"),
        ({"posture": "hot", "planes": [{"name": "a"}]}, "got 'hot'"),
        ({"planes": [{"name": "A B"}]}, "planes.0.name"),
    ],
)
def test_mistakes_are_named(fleet: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fleet_config({"fleet": fleet})
    assert says in str(err.value)


def test_a_file_that_is_not_a_fleet(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("deployments: []\n")
    with pytest.raises(ConfigError, match="top-level 'fleet:' key"):
        load_fleet_config(path)
    with pytest.raises(ConfigError, match="cannot read fleet config"):
        load_fleet_config(tmp_path / "missing.yaml")


TRAFFIC = {
    "regions": [{"name": "americas", "utc_offset_h": -6, "share": 2}],
    "replica": {"concurrency": 8, "prefill_tokens_per_s": 5000, "decode_tokens_per_s": 40},
}


def test_the_simulator_sections_parse_with_defaults() -> None:
    fleet = parse_fleet_config(
        {
            "fleet": {
                "planes": [{"name": "a"}],
                "traffic": TRAFFIC,
                "simulation": {"outages": [{"plane": "a", "at_h": 2, "for_h": 0.5}]},
            }
        }
    )
    assert fleet.traffic is not None and fleet.traffic.ttft_slo_ms == 2000
    assert fleet.simulation.tick_s == 10 and fleet.simulation.outages[0].for_h == 0.5
    assert parse_fleet_config({"fleet": {"planes": [{"name": "a"}]}}).traffic is None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"simulation": {"outages": [{"plane": "b", "at_h": 1, "for_h": 1}]}}, "no plane 'b'"),
        (
            {"traffic": {**TRAFFIC, "regions": [{"name": "x", "share": 1, "residency": "eu"}]}},
            "residency 'eu' is met by no plane",
        ),
        (
            {"traffic": {**TRAFFIC, "regions": TRAFFIC["regions"] * 2}},
            "repeated: americas",
        ),
        (
            {"traffic": {**TRAFFIC, "replica": {"concurrency": 8}}},
            "or model and gpu to derive them",
        ),
        ({"traffic": {**TRAFFIC, "diurnal": 1.0}}, "traffic.diurnal"),
    ],
)
def test_simulator_section_errors(extra: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fleet_config({"fleet": {"planes": [{"name": "a"}], **extra}})
    assert says in str(err.value)
