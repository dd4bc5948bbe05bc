"""The Ray backend end to end on a real three-node Ray cluster on this machine.

A head and two workers (``support.ray_cluster``), each with its own resources: the head and
worker ``w1`` carry the capacity pool's resource (``pool:gpu``), worker ``w2`` only CPUs. A real
``shipit up --backend ray --ray-address ...`` (simulated-accelerator replicas, autoscaling 0..2)
must: start its two replicas one per node that has the resource, none on ``w2``; when ``w1``'s
raylet is SIGKILLed under streamed load, replace the lost replica on the surviving node with
the resource, and lose no request sent after the lost replica had died (the gateway retries
it elsewhere or holds it); go idle to zero replicas (every replica process and actor gone) and
come back from zero for a held request. Skipped when Ray (the ``ray`` extra) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.ray_cluster import LocalRayCluster
from support.replica_process import SHIPIT, free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="needs Ray: the ray extra (pip install 'shipit[ray]'; uv sync installs it for dev)",
)

MODEL = "llama-3.1-8b"
POOL = {"pool:gpu": 2}


@dataclass
class Sent:
    started_s: float
    ok: bool
    detail: str


class Load:
    """Streamed chat requests in a loop from a few threads, each one recorded."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.concurrency = url, concurrency
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)
        ]

    def _run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "say something"}],
            "max_tokens": 8,
            "stream": True,
        }
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    with client.stream("POST", self.url + "/v1/chat/completions", json=body) as r:
                        text = b"".join(r.iter_bytes())
                    ok = r.status_code == 200 and b"[DONE]" in text
                    self.sent.append(Sent(t, ok, f"{r.status_code} {text[-200:]!r}"))
                except httpx.HTTPError as exc:
                    self.sent.append(Sent(t, False, repr(exc)))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=130)


def wait_for(
    what: str, check: Callable[[], bool], timeout_s: float, up: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, "shipit up exited"
        try:
            if check():
                return
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster() -> Iterator[LocalRayCluster]:
    c = LocalRayCluster()
    try:
        c.start_head({**POOL})
        c.add_worker("w1", {**POOL})
        c.add_worker("w2", {})
        yield c
    finally:
        c.stop()
        assert c.leftovers() == [], "Ray processes left running"


def test_replicas_on_a_real_ray_cluster(cluster: LocalRayCluster, tmp_path: Path) -> None:
    began = time.monotonic()
    cfg: dict[str, Any] = {
        "deployments": [
            {
                "name": "sim",
                "model": MODEL,
                "simulate": f"H100:{MODEL}",
                "backend": "ray",
                "replicas": 2,
                "ray_backend": {
                    "pool": "gpu",
                    "num_cpus": 0,
                    "replica_host": "127.0.0.1",
                    "log_dir": str(tmp_path / "replica-logs"),
                    "placement_timeout_s": 120,
                },
                "health_interval_s": 0.2,
                "drain_timeout_s": 5,
                "replica_args": ["--log-level", "warning"],
                "queueing": {"max_concurrency": 4, "cold_start_keepalive_s": 0.5},
                "autoscaling": {
                    "min_replicas": 0,
                    "max_replicas": 2,
                    "target_concurrency": 1,
                    "target_utilization": 1.0,
                    "autoscaling_window_s": 4,
                    "panic_window_s": 1,
                    "scale_down_delay_s": 10,
                    "idle_timeout_s": 4,
                    "tick_interval_s": 0.2,
                },
            }
        ]
    }
    (tmp_path / "shipit.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = cluster.env()
    with log.open("wb") as out:
        up = subprocess.Popen(
            [
                SHIPIT,
                "up",
                "--config",
                str(tmp_path / "shipit.yaml"),
                "--port",
                str(port),
                "--ray-address",
                cluster.address,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def replicas() -> list[dict[str, Any]]:
        body = httpx.get(url + "/shipit/status", timeout=5).json()
        found: list[dict[str, Any]] = body["deployments"][0]["replicas"]
        return found

    def ready_ports() -> set[int]:
        return {int(r["url"].rsplit(":", 1)[1]) for r in replicas() if r["state"] == "ready"}

    def placed() -> dict[str, set[int]]:
        cluster.track()
        return {name: node.replica_ports() for name, node in cluster.nodes.items()}

    def listening() -> bool:
        return httpx.get(url + "/health", timeout=5).status_code in (200, 503)

    try:
        wait_for("the gateway", listening, 180, up)
        # Load from the start: the two replicas it starts with are wanted (no scale-down).
        with Load(url, concurrency=4) as load:
            wait_for("two ready replicas", lambda: len(ready_ports()) == 2, 240, up)
            # Placement by resource and spread: one on each node with pool:gpu, none on w2.
            first = placed()
            assert len(first["head"]) == 1, first
            assert len(first["w1"]) == 1, first
            assert first["w2"] == set(), first
            assert first["head"] | first["w1"] == ready_ports()
            wait_for("load flowing", lambda: sum(s.ok for s in load.sent) >= 8, 60, up)

            # Lose node w1: SIGKILL its raylet; its replica dies with it.
            [(lost_port, lost_pid)] = cluster.nodes["w1"].replicas().items()
            cluster.kill_raylet("w1")
            wait_for(
                "the lost replica's process to end",
                lambda: not Path(f"/proc/{lost_pid}").exists(),
                60,
                up,
            )
            died_s = time.monotonic()
            wait_for(
                "a replacement on a surviving node",
                lambda: len(ready_ports()) == 2 and lost_port not in ready_ports(),
                180,
                up,
            )
            replaced_s = time.monotonic()
            after = placed()
            assert len(after["head"]) == 2, after
            assert after["w2"] == set(), after
            assert after["head"] == ready_ports()
            wait_for(
                "load after the loss",
                lambda: sum(s.ok for s in load.sent if s.started_s > died_s) >= 8,
                60,
                up,
            )
        later = [s for s in load.sent if s.started_s >= died_s]
        assert later and all(s.ok for s in later), [s.detail for s in later if not s.ok][:5]
        cut = [s for s in load.sent if not s.ok]
        assert len(cut) <= 4, [s.detail for s in cut]  # at most what was in flight on w1
        print(
            f"node loss: {len(load.sent)} requests, {len(cut)} cut in flight, "
            f"{len(later)} sent after the replica died all answered; replacement ready "
            f"{replaced_s - died_s:.1f}s after"
        )

        # Idle: down to zero replicas, every replica process gone from every node.
        wait_for("scale to zero", lambda: replicas() == [], 120, up)
        assert all(ports == set() for ports in placed().values()), placed()

        # A request to zero replicas is held through the cold start and answered.
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=240)
        assert r.status_code == 200, r.text
        assert len(ready_ports()) >= 1
        back = placed()
        assert back["w2"] == set() and back["w1"] == set() and back["head"], back
    except BaseException:
        print(log.read_text(errors="replace")[-8000:])
        raise
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        print(f"ray backend cluster test: {time.monotonic() - began:.0f}s after the cluster was up")
    assert up.returncode == 0, log.read_text(errors="replace")[-4000:]
    assert all(ports == set() for ports in placed().values())
