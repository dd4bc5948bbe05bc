"""One set of decisions: a real ``shipit up`` run, recorded with ``--record-decisions``, replays
through the simulator's drivers to identical decisions.

The run: simulated-accelerator replicas behind the gateway with autoscaling 1..3, 300 streamed
requests from 16 concurrent clients at three priorities (so requests queue and dispatch by
priority), a replica killed with SIGKILL a third of the way in (its requests fail over, the
lifecycle policy reaps it and holds new starts), and a scale-up. Every decision the live router,
monitor and autoscaler took is read back from the file and fed, with the snapshot and state it
was taken from, to ``sim.replay``."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from shipit.config.gateway import load_config
from shipit.core.decisions import read_entries
from shipit.policy.autoscaling import AutoscalingSnapshot
from shipit.sim.replay import replay
from support.up_process import SIM_MODEL, Up, launch

REQUESTS = 300
CLIENTS = 16


def _config() -> dict[str, Any]:
    return {
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": 1,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
                "queueing": {"max_concurrency": 4, "max_queue": 256},
                "autoscaling": {
                    "min_replicas": 1,
                    "max_replicas": 3,
                    "target_concurrency": 2,
                    "target_utilization": 1.0,
                    "autoscaling_window_s": 4,
                    "panic_window_s": 1,
                    "scale_down_delay_s": 30,
                    "tick_interval_s": 0.2,
                },
            }
        ],
    }


def _drive(up: Up) -> Counter[int]:
    """300 streamed requests at priorities 0/1/2; kill the first replica after 100."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    sent = iter(range(REQUESTS))
    victim = up.status()["deployments"][0]["replicas"][0]["url"]
    killed = threading.Event()

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            for i in sent:
                if i == REQUESTS // 3 and not killed.is_set():
                    killed.set()
                    os.kill(up.replica_pid(victim), signal.SIGKILL)
                body = {
                    "model": SIM_MODEL,
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": 16,
                    "stream": True,
                }
                headers = {"x-shipit-priority": str(i % 3)}
                try:
                    with client.stream(
                        "POST", up.url + "/v1/chat/completions", json=body, headers=headers
                    ) as r:
                        for _ in r.iter_bytes():
                            pass
                        status = r.status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert killed.is_set()
    return statuses


def test_a_recorded_live_run_replays_to_identical_decisions(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    proc, port, log = launch(
        tmp_path, _config(), ready_replicas=1, args=("--record-decisions", str(path))
    )
    up = Up(proc, port, log, 1)
    try:
        statuses = _drive(up)
    finally:
        up.stop()
    assert sum(statuses.values()) == REQUESTS and statuses[200] >= REQUESTS - CLIENTS, statuses
    entries = list(read_entries(path.read_text().splitlines()))
    deployments = {d.name: d for d in load_config(tmp_path / "shipit.yaml").deployments}
    report = replay(entries, deployments)
    assert report.unknown == ()
    assert report.mismatches == (), report.mismatches[:3]
    kinds = dict(report.by_policy)
    for policy in ("route", "admission", "outlier", "health", "lifecycle", "autoscaling"):
        assert kinds.get(policy, 0) > 0, (policy, kinds)
    codes = Counter((e.policy, getattr(e.decision, "reason_code", "")) for e in entries)
    assert codes[("lifecycle", "crashed")] >= 1, codes  # the killed replica was reaped
    assert codes[("autoscaling", "scale_up")] + codes[("autoscaling", "panic")] >= 1, codes
    # The live router fed the autoscaler its demand counters: each request counted once as it
    # arrived (the failovers after the kill are not new arrivals), each answer with its service
    # time.
    last = [e.snapshot for e in entries if e.policy == "autoscaling"][-1]
    assert isinstance(last, AutoscalingSnapshot)
    assert REQUESTS // 2 <= last.completed <= last.arrivals <= REQUESTS, last
    assert last.service_s > 0, last
    assert codes[("admission", "queued")] >= 10, codes  # requests waited, by priority
    assert codes[("admission", "next_waiter")] >= 10, codes
