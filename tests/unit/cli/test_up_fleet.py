"""``shipit up --fleet``: a fleet file that cannot run live is refused before anything starts,
naming the plane, the field and what to add; flags of a single gateway are refused with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from shipit.cli.main import build_app
from shipit.cli.up_fleet import default_offset_h, plan_planes
from shipit.config.fleet import parse_fleet_config
from shipit.config.gateway import ConfigError

SIM = {"deployments": [{"name": "chat", "simulate": "H100:llama-3.1-8b", "model": "m"}]}


def plane(
    name: str, port: int | None, gateway: dict[str, Any] | None = SIM, **kw: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, **kw}
    if port is not None:
        out["port"] = port
    if gateway is not None:
        out["gateway"] = gateway
    return out


def fleet_of(*planes: dict[str, Any], **top: Any) -> Any:
    return parse_fleet_config({"fleet": {"planes": list(planes), **top}})


def test_each_plane_becomes_a_gateway_process_with_its_url_and_slots() -> None:
    gw = {
        "gateway": {"host": "0.0.0.0"},
        "deployments": [{"name": "chat", "model": "m", "queueing": {"max_concurrency": 3}}],
    }
    cfg = fleet_of(plane("a", 9101, gw, utc_offset_h=-5, residency=["us"]), plane("b", 9102))
    a, b = plan_planes(cfg, source="f.yaml")
    assert (a.port, a.target.url, a.target.utc_offset_h) == (9101, "http://127.0.0.1:9101", -5)
    assert (a.target.max_concurrency, a.target.residency) == ({"chat": 3}, frozenset({"us"}))
    assert (b.target.url, b.target.max_concurrency) == ("http://127.0.0.1:9102", {"chat": 8})
    # Written out as the plane's shipit.yaml, with its pools and spot draw for its gateway.
    assert a.gateway == {
        **gw,
        "plane": {
            "name": "a",
            "pools": {"on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 0.0,
                                    "preemptions_per_hour": 0.0, "notice_s": 0.0}},
            "gpus_per_replica": 1,
            "gpu_failures_per_hour": 1 / 50_000,  # the fleet file's, per GPU
            "spot_seed": 0,
            "spot_check_interval_s": 1.0,
        },
    }  # fmt: skip


def test_a_gateway_section_may_not_set_the_plane_section_itself() -> None:
    gw = {"deployments": [{"name": "chat"}], "plane": {"name": "x"}}
    with pytest.raises(ConfigError, match=r"gateway.plane is written by shipit up --fleet"):
        plan_planes(fleet_of(plane("a", 9101, gw)), source="f.yaml")


def test_port_0_picks_a_free_port() -> None:
    (a,) = plan_planes(fleet_of(plane("a", 0)), source="f.yaml")
    assert a.port > 0 and a.target.url.endswith(f":{a.port}")


def test_a_plane_without_a_gateway_section_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        plan_planes(fleet_of(plane("a", 9101), plane("b", 9102, None)), source="f.yaml")
    assert "fleet.planes.1 (b)" in err.value.message and "gateway:" in err.value.message
    assert err.value.field == "fleet.planes.1.gateway"


def test_a_plane_without_a_port_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        plan_planes(fleet_of(plane("a", None)), source="f.yaml")
    assert "fleet.planes.0 (a)" in err.value.message and "port:" in err.value.message


def test_ports_may_not_collide_with_each_other_or_the_front_door() -> None:
    with pytest.raises(ConfigError, match="port 9101 is also plane a's port"):
        plan_planes(fleet_of(plane("a", 9101), plane("b", 9101)), source="f.yaml")
    with pytest.raises(ConfigError, match=r"port 8000 is also front_door\.port"):
        plan_planes(fleet_of(plane("a", 8000)), source="f.yaml")


def test_a_bad_gateway_section_names_the_plane_and_the_field() -> None:
    bad = {"deployments": [{"name": "chat", "replicas": -1}]}
    with pytest.raises(ConfigError) as err:
        plan_planes(fleet_of(plane("a", 9101, bad)), source="f.yaml")
    assert "fleet.planes.0 (a) gateway" in err.value.message and "replicas" in err.value.message


def test_the_front_doors_offset_is_the_configured_one() -> None:
    cfg = fleet_of(plane("a", 9101), front_door={"utc_offset_h": 5.5})
    assert default_offset_h(cfg) == 5.5


def _up(*args: str) -> Any:
    return CliRunner().invoke(build_app(), ["up", *args])


def test_cli_refuses_a_missing_fleet_file(tmp_path: Path) -> None:
    r = _up("--fleet", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert "cannot read fleet config" in r.output and "nope.yaml" in r.output


def test_cli_refuses_a_plane_without_a_port(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": {"planes": [plane("a", None)]}}))
    r = _up("--fleet", str(path))
    assert r.exit_code == 2 and "needs port:" in r.output


def test_cli_refuses_single_gateway_flags_with_fleet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"fleet": {"planes": [plane("a", 9101)]}}))
    r = _up("--fleet", str(path), "--replicas", "3", "--simulate", "H100:llama-3.1-8b")
    assert r.exit_code == 2
    assert "--replicas, --simulate configure one gateway" in r.output


def test_the_example_fleet_file_plans_two_planes() -> None:
    from shipit.config.fleet import load_fleet_config

    example = Path(__file__).resolve().parents[3] / "examples" / "fleet-live.yaml"
    plans = plan_planes(load_fleet_config(example), source=str(example))
    assert [(p.name, p.port) for p in plans] == [("us-east", 8101), ("eu-west", 8102)]


def test_the_planes_admin_key_comes_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipit.cli.up_fleet import control_headers

    assert control_headers(fleet_of(plane("a", 9101))) == {}
    cfg = fleet_of(plane("a", 9101), control_plane={"admin_key_env": "FLEET_ADMIN_KEY"})
    monkeypatch.delenv("FLEET_ADMIN_KEY", raising=False)
    with pytest.raises(ConfigError, match="names FLEET_ADMIN_KEY, which is not set"):
        control_headers(cfg)
    monkeypatch.setenv("FLEET_ADMIN_KEY", "sk-shipit-abc")
    assert control_headers(cfg) == {"authorization": "Bearer sk-shipit-abc"}


def test_the_fleet_files_gpu_failure_rate_reaches_each_plane() -> None:
    gw = {"deployments": [{"name": "chat", "model": "m"}]}
    cfg = fleet_of(plane("a", 9101, gw), gpu_failures_per_hour=0.5, gpus_per_replica=2)
    (a,) = plan_planes(cfg, source="f.yaml")
    section = a.gateway["plane"]
    assert (section["gpu_failures_per_hour"], section["gpus_per_replica"]) == (0.5, 2)


def test_an_obtain_delay_must_end_before_the_startup_timeout() -> None:
    """A replica waiting for its machine is starting: past the startup timeout it would be
    replaced as never ready, again and again."""
    pools = {"on_demand": {"usd_per_gpu_hour": 4.0, "obtain_delay_s": 600}}
    gw = {"deployments": [{"name": "chat", "model": "m"}]}
    with pytest.raises(ConfigError, match=r"obtain_delay_s 600 is not under deployment chat's "):
        plan_planes(fleet_of(plane("a", 9101, gw, pools=pools)), source="f.yaml")
    gw = {"deployments": [{"name": "chat", "model": "m", "startup_timeout_s": 900}]}
    (a,) = plan_planes(fleet_of(plane("a", 9101, gw, pools=pools)), source="f.yaml")
    assert a.gateway["plane"]["pools"]["on_demand"]["obtain_delay_s"] == 600
