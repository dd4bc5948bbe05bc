"""``shipit up --fleet`` as real processes on 127.0.0.1: two planes (each a ``shipit up`` with one
simulated replica) behind the global front door.

Active-active under steady streamed and non-streamed load: one plane's gateway is SIGKILLed;
no request is lost (each completes, or, only if its answer had started, ends with the front
door's mid-stream error event), the plane is marked out within fail_after x probe_interval
(plus slack) of the kill, and its clients' traffic moves to the other plane. Active-passive:
the standby is probed but idle; the active is killed, the standby is promoted (the reason at
``/shipit/fleet``) and serves; a SIGKILLed front door takes its planes down with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.replica_process import SHIPIT, free_port

SIM_MODEL = "llama-3.1-8b"
PROBE_INTERVAL_S = 0.2
FAIL_AFTER = 3
SLACK_S = 3.0  # generous: two shared cores, five processes


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _plane(name: str, offset: float, port: int, role: str = "active") -> dict[str, Any]:
    return {
        "name": name,
        "utc_offset_h": offset,
        "role": role,
        "port": port,
        "gateway": {
            "alerts": {"sample_interval_s": 1},
            "deployments": [
                {
                    "name": "sim",
                    "model": SIM_MODEL,
                    "simulate": f"H100:{SIM_MODEL}",
                    "replicas": 1,
                    "health_interval_s": 0.2,
                    "replica_args": ["--log-level", "warning"],
                }
            ],
        },
    }


@dataclass
class Fleet:
    proc: subprocess.Popen[bytes]
    port: int
    plane_ports: dict[str, int]
    log: Path
    stray: list[int] = field(default_factory=list)  # replicas of a killed plane gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fleet(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/shipit/fleet", timeout=10).json()
        return data

    def plane_pid(self, name: str) -> int:
        port = str(self.plane_ports[name]).encode()
        for pid in _children(self.proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--port" in argv and argv[argv.index(b"--port") + 1] == port:
                return pid
        raise LookupError(f"no plane gateway of the front door serves port {port!r}")

    def kill_plane(self, name: str) -> float:
        """SIGKILL the plane's gateway; its replicas (left behind) are stopped at teardown."""
        pid = self.plane_pid(name)
        self.stray += _children(pid)
        os.kill(pid, signal.SIGKILL)
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.stray:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def start_fleet(root: Path, posture: str, planes: list[tuple[str, float, str]]) -> Fleet:
    ports = {name: free_port() for name, _, _ in planes}
    door = free_port()
    cfg = {
        "fleet": {
            "posture": posture,
            "front_door": {"port": door, "utc_offset_h": 0},
            "failover": {
                "probe_interval_s": PROBE_INTERVAL_S,
                "fail_after": FAIL_AFTER,
                "recover_after": 2,
            },
            "planes": [_plane(n, off, ports[n], role) for n, off, role in planes],
        }
    }
    return launch(root, cfg, door, ports)


def launch(root: Path, cfg: dict[str, Any], door: int, ports: dict[str, int]) -> Fleet:
    """``shipit up --fleet`` on ``cfg``; once its front door answers ``/health``."""
    (root / "fleet.yaml").write_text(yaml.safe_dump(cfg))
    log = root / "fleet.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SHIPIT, "up", "--fleet", str(root / "fleet.yaml"), "--log-dir", str(root / "logs")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    fleet = Fleet(proc, door, ports, log)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"shipit up --fleet exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(fleet.url + "/health", timeout=1).status_code == 200:
                return fleet
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    fleet.stop()
    raise RuntimeError("the front door never served:\n" + log.read_text())


@dataclass
class Outcome:
    started_s: float
    ended_s: float
    region: str
    stream: bool
    status: int
    plane: str | None
    kind: str  # ok, midstream, failed
    detail: str = ""


def _one(client: httpx.Client, url: str, region: str, i: int, stream: bool) -> Outcome:
    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": f"tell me about item {i} please"}],
        "max_tokens": 96 if stream else 32,
        "stream": stream,
    }
    headers = {"x-shipit-region": region}
    started = time.time()
    try:
        with client.stream("POST", url, json=body, headers=headers) as r:
            raw = b"".join(r.iter_bytes()).decode(errors="replace")
            status, plane = r.status_code, r.headers.get("x-shipit-plane")
    except httpx.HTTPError as exc:
        return Outcome(started, time.time(), region, stream, 0, None, "failed", repr(exc))
    kind, detail = "failed", raw[-300:]
    if status == 200 and not stream:
        try:
            kind = "ok" if json.loads(raw)["choices"][0]["finish_reason"] else "failed"
        except (ValueError, KeyError, IndexError):
            kind = "failed"
    elif status == 200:
        events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e.startswith("data: ")]
        errors = [json.loads(e)["error"] for e in events if e.startswith('{"error"')]
        if events and events[-1] == "[DONE]" and not errors:
            kind = "ok"
        elif errors and "failed mid-stream" in errors[0]["message"]:
            kind = "midstream"
    return Outcome(started, time.time(), region, stream, status, plane, kind, detail)


class Load:
    """``clients`` threads, each in a loop: half in one region, half in the other; in each
    region one client streams (long answers) and one does not."""

    def __init__(self, url: str, regions: list[str], clients: int = 4) -> None:
        self.url = url + "/v1/chat/completions"
        self.regions = regions
        self.clients = clients
        self.done: list[Outcome] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(clients)]

    def _run(self, k: int) -> None:
        region = self.regions[k % len(self.regions)]
        with httpx.Client(timeout=30) as client:
            i = k
            while not self.stop_flag.is_set():
                out = _one(client, self.url, region, i, stream=(k // len(self.regions)) % 2 == 0)
                with self.lock:
                    self.done.append(out)
                i += self.clients

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=40)


@pytest.fixture
def active_active(tmp_path: Path) -> Iterator[Fleet]:
    fleet = start_fleet(
        tmp_path, "active-active", [("east", -5.0, "active"), ("west", 1.0, "active")]
    )
    yield fleet
    fleet.stop()


def _wait_change(fleet: Fleet, plane: str, change: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for c in fleet.fleet()["changes"]:
            if (c["plane"], c["change"]) == (plane, change):
                return c
        time.sleep(0.1)
    raise AssertionError(f"no {change!r} change for {plane} in {timeout_s:g}s: {fleet.fleet()}")


def test_active_active_loses_no_request_when_a_plane_is_killed(active_active: Fleet) -> None:
    fleet = active_active
    with Load(fleet.url, ["east", "west"]) as load:
        time.sleep(3.0)
        killed_at = fleet.kill_plane("west")
        out = _wait_change(fleet, "west", "out", timeout_s=30)
        time.sleep(3.0)
    results = load.done
    failed = [r for r in results if r.kind == "failed"]
    assert not failed, f"lost requests: {failed[:5]}"
    # Only answers the killed plane had started may break, and only as the stated error.
    broken = [r for r in results if r.kind == "midstream"]
    assert all(r.plane == "west" and r.stream and r.started_s < killed_at for r in broken)
    west_before = [r for r in results if r.region == "west" and r.ended_s < killed_at]
    assert west_before and all(r.plane == "west" for r in west_before)  # it was serving
    moved = [r for r in results if r.region == "west" and r.started_s > killed_at]
    assert len(moved) >= 4 and all(r.plane == "east" and r.kind == "ok" for r in moved)
    # Marked out within fail_after probes of the kill (plus slack for the shared cores).
    detected_s = out["at_s"] - killed_at
    assert 0 < detected_s <= FAIL_AFTER * PROBE_INTERVAL_S + SLACK_S, detected_s
    assert fleet.fleet()["serving"] == ["east"]
    # SIGTERM to the front door: the surviving plane drains and stops its replica; the
    # killed one is reported.
    survivors = [fleet.plane_pid("east")]
    survivors += _children(survivors[0])
    fleet.proc.send_signal(signal.SIGTERM)
    assert fleet.proc.wait(timeout=90) == 1
    assert _wait_gone(survivors, timeout_s=30) == []
    assert "west exited -9" in fleet.log.read_text()
    at_kill = [r for r in results if r.started_s < killed_at < r.ended_s and r.region == "west"]
    assert at_kill  # the kill caught requests in flight (each counted above: none lost)
    print(
        f"\nfailover: west out {detected_s:.2f}s after SIGKILL; {len(results)} requests, "
        f"{len(broken)} broken mid-stream, {len(moved)} west-region requests served by east; "
        f"west-region requests open at the kill: {[(r.stream, r.plane, r.kind) for r in at_kill]}"
    )


def test_active_passive_promotes_the_standby_and_a_killed_door_takes_planes_down(
    tmp_path: Path,
) -> None:
    fleet = start_fleet(
        tmp_path, "active-passive", [("primary", 0.0, "active"), ("backup", 0.0, "standby")]
    )
    try:
        with httpx.Client(timeout=30) as client:
            before = [
                _one(client, fleet.url + "/v1/chat/completions", "backup", i, True)
                for i in range(4)
            ]
            assert [(r.kind, r.plane) for r in before] == [("ok", "primary")] * 4
            view = fleet.fleet()
            backup = next(p for p in view["planes"] if p["name"] == "backup")
            assert (backup["role"], backup["serving"], backup["served"]) == ("standby", False, 0)
            assert backup["last_probe"]["ok"] is True  # warm: probed, ready, idle
            killed_at = fleet.kill_plane("primary")
            promoted = _wait_change(fleet, "backup", "promoted", timeout_s=30)
            after = [
                _one(client, fleet.url + "/v1/chat/completions", "backup", i, True)
                for i in range(3)
            ]
        assert [(r.kind, r.plane) for r in after] == [("ok", "backup")] * 3
        assert "no active plane is up" in promoted["reason"] and "primary" in promoted["reason"]
        promoted_s = promoted["at_s"] - killed_at
        assert 0 < promoted_s <= FAIL_AFTER * PROBE_INTERVAL_S + SLACK_S, promoted_s
        print(f"\nactive-passive: backup promoted {promoted_s:.2f}s after SIGKILL of primary")
        view = fleet.fleet()
        assert view["serving"] == ["backup"]
        backup = next(p for p in view["planes"] if p["name"] == "backup")
        assert (backup["role"], backup["promoted"], backup["served"]) == ("active", True, 3)
        # kill -9 of the front door: its planes get SIGTERM (PR_SET_PDEATHSIG), drain, stop
        # their replicas; nothing is left behind.
        plane = fleet.plane_pid("backup")
        replicas = _children(plane)
        assert replicas
        fleet.proc.kill()
        fleet.proc.wait(timeout=10)
        assert _wait_gone([plane, *replicas], timeout_s=90) == []
    finally:
        fleet.stop()


# ----- the live control plane: placement and spot pools -----------------------------------------


def _control_plane(
    root: Path, planes: list[dict[str, Any]], control: dict[str, Any], probe_s: float = 0.5
) -> Fleet:
    ports = {p["name"]: free_port() for p in planes}
    door = free_port()
    for p in planes:
        p["port"] = ports[p["name"]]
        p["gateway"] = {
            "deployments": [
                {
                    "name": "sim",
                    "model": SIM_MODEL,
                    "simulate": f"H100:{SIM_MODEL}",
                    "replicas": 1,
                    "health_interval_s": 0.2,
                    "queueing": {"max_concurrency": 2},
                    "replica_args": ["--log-level", "warning"],
                }
            ],
        }
    cfg = {
        "fleet": {
            "front_door": {"port": door, "utc_offset_h": 0},
            # generous: a plane waiting for a replacement must not be taken out meanwhile
            "failover": {"probe_interval_s": probe_s, "fail_after": 40, "recover_after": 1},
            "control_plane": control,
            "planes": planes,
        }
    }
    return launch(root, cfg, door, ports)


def _plane_get(fleet: Fleet, plane: str, path: str) -> Any:
    url = f"http://127.0.0.1:{fleet.plane_ports[plane]}{path}"
    return httpx.get(url, timeout=10).json()


def _bounds(fleet: Fleet, plane: str) -> tuple[int, int]:
    got = _plane_get(fleet, plane, "/shipit/scaling")["deployments"]["sim"]
    return got["min_replicas"], got["max_replicas"]


def _wait_for(what: str, check: Any, timeout_s: float, every_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:g}s")


def test_placement_moves_the_planes_bounds_with_the_demand(tmp_path: Path) -> None:
    """Three clients busy in one region: demand about three replicas (two slots a replica at
    50%) on planes that can run two each: the region's plane is filled (held at 2..2), the rest
    spills to the other (1..2). The clients move to the other region: the bounds follow."""
    planes = [
        {"name": "east", "utc_offset_h": -5.0, "max_replicas": 2},
        {"name": "west", "utc_offset_h": 1.0, "max_replicas": 2},
    ]
    control = {"placement_interval_s": 1.5, "target_utilization": 0.5}
    fleet = _control_plane(tmp_path, planes, control)
    try:
        load = Load(fleet.url, ["east"], clients=3)
        with load:
            _wait_for("east held full", lambda: _bounds(fleet, "east") == (2, 2), 30)
            _wait_for("west takes the spill", lambda: _bounds(fleet, "west") == (1, 2), 5)
        placement = fleet.fleet()["placement"]
        last = placement["history"][-1]
        assert last["planes"]["east"]["reason_code"] == "full"
        assert last["demand_replicas"]["UTC-5"] > 2.0
        load = Load(fleet.url, ["west"], clients=3)
        with load:
            _wait_for("west held full", lambda: _bounds(fleet, "west") == (2, 2), 30)
            _wait_for("east takes the spill", lambda: _bounds(fleet, "east") == (1, 2), 5)
        east = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["autoscaling"]
        assert "east" in east["bounds_reason"]  # the placement's reason, as the plane has it
        assert not [r for r in load.done if r.kind != "ok"]
        metrics = httpx.get(fleet.url + "/metrics", timeout=10).text
        assert 'shipit_front_door_plane_bounds{bound="min",plane="west"} 2.0' in metrics
        print(f"\nplacement: {len(placement['history'])} decisions; last: {last}")
    finally:
        fleet.stop()


def test_a_spot_notice_drains_the_replica_and_a_replacement_serves(tmp_path: Path) -> None:
    """One plane whose only replica is spot (cheaper than on demand). A notice while two long
    streams run on it: it takes nothing new, both streams finish, it is stopped once empty, and
    the replacement (on demand: spot is short right after a pre-emption) serves what follows."""
    pools = {
        "on_demand": {"usd_per_gpu_hour": 4.0},
        "spot": {"usd_per_gpu_hour": 1.0, "notice_s": 30.0},
    }
    planes = [{"name": "east", "utc_offset_h": -5.0, "pools": pools}]
    control = {"placement_interval_s": 3600, "spot_check_interval_s": 0.2}
    fleet = _control_plane(tmp_path, planes, control)
    url = fleet.url + "/v1/chat/completions"
    try:
        status = _plane_get(fleet, "east", "/shipit/status")
        (spot,) = status["deployments"][0]["replicas"]
        assert spot["pool"] == "spot" and status["pools"]["choices"] == {"spot/spot_cheaper": 1}
        streams: list[Outcome] = []

        def stream(i: int) -> None:
            with httpx.Client(timeout=60) as client:
                body = {
                    "model": SIM_MODEL,
                    "messages": [{"role": "user", "content": f"a long story {i}"}],
                    "max_tokens": 600,
                    "stream": True,
                }
                started = time.time()
                with client.stream(
                    "POST", url, json=body, headers={"x-shipit-region": "east"}
                ) as r:
                    raw = b"".join(r.iter_bytes()).decode()
                ok = (
                    r.status_code == 200
                    and raw.endswith("data: [DONE]\n\n")
                    and '"error"' not in raw
                )
                streams.append(
                    Outcome(started, time.time(), "east", True, r.status_code,  # plane: replica
                            r.headers.get("x-shipit-replica"), "ok" if ok else "failed", raw[-300:])
                )  # fmt: skip

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()

        def busy() -> bool:
            reps = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
            return any(r["id"] == spot["id"] and r["in_flight"] == 2 for r in reps)

        _wait_for("both streams on the spot replica", busy, 20, every_s=0.05)
        plane = f"http://127.0.0.1:{fleet.plane_ports['east']}"
        notice = httpx.post(
            plane + "/shipit/pools/preempt", json={"replica_id": spot["id"]}, timeout=10
        )
        assert notice.status_code == 202, notice.text
        event = notice.json()
        (replacement,) = event["replacements"]
        assert event["replacement_pools"] == ["on_demand"]
        reps = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
        noticed = next(r for r in reps if r["id"] == spot["id"])
        assert noticed["state"] == "draining" and noticed["in_flight"] >= 1  # still serving them
        for t in threads:
            t.join(timeout=60)
        assert [(s.kind, s.plane) for s in streams] == [("ok", spot["id"])] * 2, streams

        def gone_and_ready() -> bool:
            reps = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
            return [(r["id"], r["state"], r["pool"]) for r in reps] == [
                (replacement, "ready", "on_demand")
            ]

        _wait_for("the noticed replica stopped, the replacement ready", gone_and_ready, 30)
        with httpx.Client(timeout=30) as client:
            after = [_one(client, url, "east", i, False) for i in range(3)]
            served_by = [
                client.post(
                    url,
                    json={"model": SIM_MODEL, "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 4},
                    headers={"x-shipit-region": "east"},
                ).headers.get("x-shipit-replica")
                for _ in range(2)
            ]  # fmt: skip
        assert [r.kind for r in after] == ["ok"] * 3
        assert served_by == [replacement] * 2
        pools_view = _plane_get(fleet, "east", "/shipit/pools")
        assert pools_view["preemptions"] == 1 and pools_view["replicas_by_pool"]["on_demand"] == 1
        metrics = httpx.get(plane + "/metrics", timeout=10).text
        assert 'shipit_spot_preemptions_total{cause="triggered",deployment="sim"} 1.0' in metrics

        def door_shows_it() -> bool:  # the front door sums the planes' pools from its probes
            got = fleet.fleet()["pools"]
            return bool(got["replicas_by_pool"] == {"on_demand": 1, "reserved": 0, "spot": 0})

        _wait_for("the front door's view of the pools", door_shows_it, 10, every_s=0.1)
        door = fleet.fleet()["pools"]
        assert (door["planes_reporting"], door["usd_per_hour"], door["preemptions"]) == (
            ["east"],
            4.0,
            1,
        )
        print(f"\nspot notice: {event['reason']}; streams took "
              f"{[round(s.ended_s - s.started_s, 1) for s in streams]} s")  # fmt: skip
    finally:
        fleet.stop()


def test_a_gpu_failure_kills_the_replica_and_a_replacement_serves(tmp_path: Path) -> None:
    """One plane, one replica, two clients sending non-streamed requests in a loop. A GPU
    failure drill: the replica's process is killed (gone at once), its pseudo-node cordoned,
    a replacement started; what was in flight on it had not begun to answer, so the gateway
    retries it and no client request fails; the replacement serves what follows."""
    planes = [{"name": "east", "utc_offset_h": -5.0}]
    control = {"placement_interval_s": 3600, "spot_check_interval_s": 0.2}
    fleet = _control_plane(tmp_path, planes, control)
    url = fleet.url + "/v1/chat/completions"
    plane = f"http://127.0.0.1:{fleet.plane_ports['east']}"
    try:
        (victim,) = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
        done: list[Outcome] = []
        stop = threading.Event()

        def client(k: int) -> None:
            with httpx.Client(timeout=60) as c:
                i = k
                while not stop.is_set():
                    done.append(_one(c, url, "east", i, stream=False))
                    i += 2

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        try:
            _wait_for("requests served", lambda: len(done) >= 2, 30, every_s=0.05)

            def busy() -> bool:
                reps = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
                return reps[0]["in_flight"] >= 1

            _wait_for("a request in flight on the replica", busy, 20, every_s=0.02)
            failed = httpx.post(
                plane + "/shipit/pools/fail", json={"replica_id": victim["id"]}, timeout=30
            )
            assert failed.status_code == 202, failed.text
            event = failed.json()
            assert event["killed"] == "SIGKILL" and event["detected_by"] == "process exit"
            assert isinstance(event["pid"], int) and not _alive(event["pid"])
            assert event["cordoned"] == [f"node-{victim['id']}"]
            (replacement,) = event["replacements"]

            def replaced() -> bool:
                reps = _plane_get(fleet, "east", "/shipit/status")["deployments"][0]["replicas"]
                return [(r["id"], r["state"]) for r in reps] == [(replacement, "ready")]

            _wait_for("the replacement ready, the failed replica gone", replaced, 60)
            served = len(done)
            _wait_for("requests served by the replacement", lambda: len(done) >= served + 2, 30)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert done and [r for r in done if r.kind != "ok"] == []
        with httpx.Client(timeout=30) as c:
            answer = c.post(
                url,
                json={"model": SIM_MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 4},
                headers={"x-shipit-region": "east"},
            )  # fmt: skip
        assert answer.headers.get("x-shipit-replica") == replacement
        pools_view = _plane_get(fleet, "east", "/shipit/pools")
        assert pools_view["gpu_failures"] == 1 and pools_view["events"][-1] == event
        assert list(pools_view["cordoned"]) == [f"node-{victim['id']}"]
        metrics = httpx.get(plane + "/metrics", timeout=10).text
        assert 'shipit_gpu_failures_total{cause="triggered",deployment="sim"} 1.0' in metrics
        retried = [m for m in metrics.splitlines() if m.startswith("shipit_retries_total{")]
        # What was in flight on it came back as a broken connection and was retried.
        assert sum(float(m.rsplit(" ", 1)[1]) for m in retried) >= 1, retried
        unknown = httpx.post(plane + "/shipit/pools/fail", json={"replica_id": "nope"}, timeout=10)
        assert unknown.status_code == 409 and "no replica 'nope'" in unknown.text
        print(f"\nGPU failure: detected after {event['detected_after_s']}s; {len(done)} "
              f"requests, none failed; retried: {retried}; {event['reason']}")  # fmt: skip
    finally:
        fleet.stop()
