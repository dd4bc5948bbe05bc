"""``RayBackend`` without a cluster: the address it joins, the resources of a single-node Ray it
starts, and the errors when Ray is missing or the cluster cannot be reached (``shipit up`` stops
with them, exit 2, before listening). Ray itself is never imported here: a stand-in module
takes its place, and a subprocess checks the core install never imports it."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipit.backends.ray import RayBackend, cluster_address, local_resources
from shipit.backends.ray_placement import RayBackendError
from shipit.cli.main import build_app
from shipit.config.ray_backend import RayBackendConfig


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def fake_ray(init_error: Exception | None = None) -> types.ModuleType:
    mod = types.ModuleType("ray")
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> None:
        calls.append(kwargs)
        if init_error is not None:
            raise init_error

    mod.is_initialized = lambda: False  # type: ignore[attr-defined]
    mod.init = init  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def test_cluster_address_one_for_all_else_the_environment() -> None:
    a = RayBackendConfig(address="10.0.0.2:6379")
    none = RayBackendConfig()
    assert cluster_address({"x": a, "y": none}, "other:1") == "10.0.0.2:6379"
    assert cluster_address({"x": none}, "10.0.0.3:6379") == "10.0.0.3:6379"
    assert cluster_address({"x": none}, None) is None
    with pytest.raises(RayBackendError) as exc:
        cluster_address({"x": a, "y": RayBackendConfig(address="10.0.0.9:6379")}, None)
    assert "10.0.0.2:6379, 10.0.0.9:6379" in exc.value.message


def test_a_local_ray_offers_the_custom_resources_asked_for() -> None:
    configs = {"a": RayBackendConfig(pool="gpu", resources={"H100": 1}), "b": RayBackendConfig()}
    res = local_resources(configs)
    assert set(res) == {"pool:gpu", "H100"} and all(v >= 100 for v in res.values())


def test_ray_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayBackendError) as exc:
        RayBackend({"d": RayBackendConfig()}, address="127.0.0.1:1").connect()
    assert "pip install 'shipit[ray]'" in exc.value.message


def test_an_unreachable_cluster_is_named_before_ray_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_ray()
    monkeypatch.setitem(sys.modules, "ray", fake)
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(RayBackendError) as exc:
        RayBackend({"d": RayBackendConfig()}, address=address).connect()
    assert address in exc.value.message and "ray start --head" in exc.value.message
    assert fake.calls == []  # type: ignore[attr-defined]


def test_a_failed_join_is_reported_with_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_ray(ConnectionError("GCS did not answer"))
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(RayBackendError) as exc:
        RayBackend({"d": RayBackendConfig()}, address="auto").connect()
    assert "at auto" in exc.value.message and "GCS did not answer" in exc.value.message


def test_without_an_address_a_single_node_ray_starts_here(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_ray()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = RayBackend({"d": RayBackendConfig(pool="gpu", namespace="ns")})
    backend.connect()
    backend.connect()  # idempotent
    [call] = fake.calls  # type: ignore[attr-defined]
    assert call["address"] is None and call["namespace"] == "ns"
    assert call["resources"]["pool:gpu"] > 0 and call["include_dashboard"] is False


def _up(tmp_path: Path, *args: str) -> Any:
    cfg = tmp_path / "shipit.yaml"
    cfg.write_text("deployments:\n  - name: d\n    simulate: H100:llama-3.1-8b\n    replicas: 1\n")
    return CliRunner().invoke(build_app(), ["up", "--config", str(cfg), "--port", "0", *args])


def test_up_backend_ray_without_ray_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    res = _up(tmp_path, "--backend", "ray", "--ray-address", "127.0.0.1:1")
    assert res.exit_code == 2, res.output
    assert "shipit[ray]" in res.output and "listening" not in res.output


def test_up_with_an_unreachable_cluster_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", fake_ray())
    address = f"127.0.0.1:{closed_port()}"
    res = _up(tmp_path, "--backend", "ray", "--ray-address", address)
    assert res.exit_code == 2, res.output
    assert address in res.output and "listening" not in res.output


def test_up_ray_address_without_a_ray_deployment_is_refused(tmp_path: Path) -> None:
    res = _up(tmp_path, "--ray-address", "127.0.0.1:6379")
    assert res.exit_code == 2, res.output
    assert "--backend ray" in res.output


def test_up_rejects_an_unknown_backend(tmp_path: Path) -> None:
    res = _up(tmp_path, "--backend", "slurm")
    assert res.exit_code == 2, res.output
    assert "slurm" in res.output and "ray" in res.output


def test_the_core_never_imports_ray() -> None:
    code = (
        "import sys\n"
        "import shipit.cli.main, shipit.cli.up, shipit.backends.fleet, shipit.backends.ray\n"
        "import shipit.backends.ray_actor, shipit.gateway.app, shipit.config.gateway\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_up_help_names_the_ray_extra() -> None:
    res = CliRunner().invoke(build_app(), ["up", "--help"])
    assert res.exit_code == 0
    assert "'shipit[ray]'" in res.output and "--ray-address" in res.output
