"""Rollouts end to end: a real ``shipit up`` with simulated-accelerator replicas under continuous
open-loop streaming load. A blue-green switch and a full canary each complete with every request
answered in full (status 200, the stream ends with ``[DONE]``, no error event); traffic really
reaches the new version, the old version's replicas are stopped, and ``shipit rollout status`` /
``history`` report it. A candidate on a slower accelerator is rolled back by the analysis with
the figures. Bounded everywhere; the gateway and its replicas are stopped by pid."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.open_loop import OpenLoop
from support.replica_process import SHIPIT
from support.up_process import SIM_MODEL, Up, launch

ROLLOUT = {
    "bake_s": 4,
    "keep_old_s": 3,
    "warmup_timeout_s": 60,
    "steps_percent": [20, 50],
    # On two shared cores a freshly started replica's median TTFT has come out 10.7 % above the
    # old ones' (12.7 vs 11.5 ms, CI) with the same version: the test floor is 25 %, well under
    # what the slower candidate costs (an A100 step is 1.6x an H100's for this model).
    "analysis": {"interval_s": 2, "min_samples": 10, "min_latency_increase": 0.25},
}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    cfg = {
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": 2,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
                "rollout": ROLLOUT,
            }
        ],
    }
    args = ("--state-dir", str(tmp_path / "state"))
    proc, port, log = launch(tmp_path, cfg, ready_replicas=2, args=args)
    handle = Up(proc, port, log, 2)
    try:
        yield handle
    finally:
        handle.stop()


def rollouts(up: Up, path: str = "") -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(up.url + "/shipit/rollouts" + path, timeout=10).json()[
        "rollouts"
    ]
    return data


def wait_phase(up: Up, phases: set[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert up.proc.poll() is None, up.log.read_text()
        found = rollouts(up)
        if found:
            last = found[0]
            if last["phase"] in phases:
                return last
        time.sleep(0.3)
    raise AssertionError(f"rollout never reached {phases}: {json.dumps(last)[:2000]}")


def versions(up: Up) -> dict[str, str]:
    return {r["id"]: r["version"] for r in up.status()["deployments"][0]["replicas"]}


def cli(up: Up, *args: str) -> str:
    out = subprocess.run(
        [SHIPIT, "rollout", *args, "--url", up.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def run_rollout(up: Up, start: dict[str, Any], end: set[str]) -> tuple[dict[str, Any], OpenLoop]:
    load = OpenLoop(up.url, SIM_MODEL, rate_per_s=12)
    load.start()
    try:
        time.sleep(2)
        r = httpx.post(up.url + "/shipit/rollouts", json=start, timeout=30)
        assert r.status_code == 201, r.text
        final = wait_phase(up, end, timeout_s=150)
        time.sleep(2)  # traffic on after the end too
    finally:
        load.stop()
    return final, load


def test_blue_green_switch_under_streaming_load(up: Up) -> None:
    old = set(versions(up))
    start = {"version": "v2", "strategy": "blue_green", "replicas": 2}
    final, load = run_rollout(up, start, {"complete", "rolled_back"})
    assert final["phase"] == "complete", (final["reason"], final["events"])
    assert len(load.results) > 100
    assert load.failed() == []
    # Traffic reached the new replicas, and the old ones are gone.
    now = versions(up)
    assert set(now.values()) == {"v2"} and not (set(now) & old)
    served = {r.replica for r in load.results}
    assert served & set(now) and served & old
    codes = [e["code"] for e in final["events"]]
    assert codes[:3] == ["start", "warming", "switch"] and codes[-1] == "complete"
    assert "v2" in cli(up, "status") and "complete" in cli(up, "history")


def test_full_canary_under_streaming_load(up: Up) -> None:
    final, load = run_rollout(up, {"version": "v2", "replicas": 2}, {"complete", "rolled_back"})
    assert final["phase"] == "complete", (final["reason"], final["events"])
    assert load.failed() == []
    codes = [e["code"] for e in final["events"]]
    steps = [e["candidate_percent"] for e in final["events"] if e["code"] == "step"]
    assert steps == [20, 50]
    assert "promote" in codes and codes[-1] == "complete"
    assert set(versions(up).values()) == {"v2"}
    history = rollouts(up, "/history")
    assert history[-1]["phase"] == "complete"


def test_slower_candidate_is_rolled_back_live(up: Up) -> None:
    start = {"version": "v2", "replicas": 2, "simulate": f"A100:{SIM_MODEL}"}
    final, load = run_rollout(up, start, {"complete", "rolled_back"})
    assert final["phase"] == "rolled_back", final
    assert "worse" in final["reason"] and "Mann-Whitney" in final["reason"]
    assert load.failed() == []
    deadline = time.monotonic() + 60
    while set(versions(up).values()) != {"v1"} and time.monotonic() < deadline:
        time.sleep(0.3)
    assert set(versions(up).values()) == {"v1"}


def test_shadow_mirrors_off_the_user_path_and_reports_identical_versions(up: Up) -> None:
    start = {"version": "v2", "replicas": 1, "strategy": "shadow", "shadow_percent": 50}
    r = httpx.post(up.url + "/shipit/rollouts", json=start, timeout=30)
    assert r.status_code == 201, r.text
    wait_phase(up, {"shadow"}, timeout_s=90)
    served: set[str] = set()
    with httpx.Client(timeout=60) as client:
        for i in range(60):
            body = {
                "model": SIM_MODEL,
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 8,
                "temperature": 0,
                "stream": True,
            }
            with client.stream("POST", up.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                served.add(resp.headers["x-shipit-replica"])
                data = b"".join(resp.iter_bytes())
                assert data.rstrip().endswith(b"data: [DONE]")
    time.sleep(1)
    state = rollouts(up)[0]
    shadow = state["shadow"]
    v2 = {rid for rid, v in versions(up).items() if v == "v2"}
    assert v2 and not (served & v2)  # users were served by v1 only
    assert shadow["pairs"] >= 12 and shadow["compared"] == shadow["pairs"]
    assert shadow["exact_match_rate"] == 1.0 and shadow["mean_edit_distance"] == 0.0
    assert shadow["mirror_decisions"].get("mirror", 0) >= shadow["pairs"]
    assert "identical" in shadow["reason"]
    out = cli(up, "abort")
    assert "rolled_back" in out or "abort" in out
    wait_phase(up, {"rolled_back"}, timeout_s=30)
