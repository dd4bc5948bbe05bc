"""Autoscaling end to end: a real ``shipit up`` with ``min_replicas: 0``, ``max_replicas: 3`` and
simulated accelerators (small windows and delays). Idle -> 0 replicas; a request held during the
cold start gets SSE keep-alive comments; a burst of 30 concurrent requests (the official
``openai`` client, streamed and not) scales the deployment up and every request completes;
idle -> back to 0; zero requests dropped, counted by the client and by the gateway; the status
JSON shows the decisions with reasons and cold starts in phases, and ``shipit status`` renders
it. Bounded everywhere; the gateway (and its replicas) are stopped by pid."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from support.replica_process import SHIPIT, free_port

SIM = "H100:llama-3.1-8b"
MODEL = "llama-3.1-8b"


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        data: bytes = r.read()
        return data


def _status(port: int) -> dict[str, Any]:
    deployments: list[dict[str, Any]] = json.loads(_get(port, "/shipit/status"))["deployments"]
    return deployments[0]


def _wait_for(what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "shipit up exited"
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    cfg = {
        "deployments": [
            {
                "model": MODEL,
                "simulate": SIM,
                "health_interval_s": 0.2,
                "drain_timeout_s": 10,
                "replica_args": ["--log-level", "warning"],
                "queueing": {"max_concurrency": 4, "cold_start_keepalive_s": 0.2},
                "autoscaling": {
                    "min_replicas": 0,
                    "max_replicas": 3,
                    "target_concurrency": 4,
                    "target_utilization": 1.0,
                    "autoscaling_window_s": 4,
                    "panic_window_s": 1,
                    "scale_down_delay_s": 2,
                    "idle_timeout_s": 2,
                    "tick_interval_s": 0.2,
                    # About what a simulated replica takes to start here. At the default
                    # 30 s the burst's 4 s backlog drains on the first replica before any
                    # other could be ready, so (rightly) none was started when the first
                    # replica came up quickly.
                    "cold_start_s": 1.0,
                },
            }
        ]
    }
    path = tmp_path / "shipit.yaml"
    path.write_text(json.dumps(cfg))
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SHIPIT, "up", "-c", str(path), "--port", str(port)], stdout=out, stderr=out
        )
    try:
        _wait_for("the gateway", lambda: _status(port) is not None, 30, proc)
        yield port, proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _one(client: openai.AsyncOpenAI, i: int) -> str:
    """'ok' for a complete answer; anything else is a dropped request."""
    try:
        if i % 2:
            r = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=64
            )
            return "ok" if r.choices[0].finish_reason else "incomplete"
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"q{i}"}],
            max_tokens=64,
            stream=True,
        )
        finish = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return "ok" if finish else "incomplete"
    except openai.APIError as exc:
        return f"error: {exc}"


async def _burst(port: int, n: int) -> tuple[list[str], int]:
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            st = await asyncio.to_thread(_status, port)
            live = [r for r in st["replicas"] if r["state"] in ("starting", "ready")]
            peak = max(peak, len(live))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120
    )
    try:
        results = await asyncio.gather(*(_one(client, i) for i in range(n)))
    finally:
        await client.close()
        watcher.cancel()
    return list(results), peak


def _held_stream_lines(port: int) -> list[str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={**body, "stream": True},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        lines.extend(line for line in r.iter_lines() if line)
    return lines


def test_zero_to_three_and_back_to_zero_with_no_request_dropped(
    up: tuple[int, subprocess.Popen[bytes], Path],
) -> None:
    port, proc, _log = up
    assert _status(port)["replicas"] == []  # min_replicas 0: nothing runs while idle

    # Scale from zero: a stream held through the cold start sees keep-alive comments first.
    lines = _held_stream_lines(port)
    assert lines[0] == ": waiting for a replica to start", lines[:3]
    assert lines[-1] == "data: [DONE]"

    # Back to zero once idle, then a burst from zero.
    _wait_for("scale to zero", lambda: _status(port)["replicas"] == [], 40, proc)
    results, peak = asyncio.run(_burst(port, 30))
    assert results == ["ok"] * 30, [r for r in results if r != "ok"]
    assert peak >= 2, "the burst scaled the deployment beyond one replica"
    assert peak <= 3

    _wait_for("scale to zero again", lambda: _status(port)["replicas"] == [], 40, proc)

    st = _status(port)["autoscaling"]
    reasons = [d["reason"] for d in st["decisions"]]
    assert any("scale from zero" in r for r in reasons), reasons
    assert any("scale to zero" in r for r in reasons), reasons
    assert max(d["target"] for d in st["decisions"]) >= 2
    cold = st["cold_starts"][0]
    assert {"process_start", "load_weights", "warmup", "health"} <= set(cold["phases_s"])
    assert cold["weights_source"] == "simulated" and cold["total_s"] > 0

    metrics = _get(port, "/metrics").decode()
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("shipit_requests_total{") and 'status="200"' in line
    )
    assert served == 31  # the held stream + the burst: none dropped, none refused
    assert 'shipit_scale_events_total{deployment="default",direction="up"}' in metrics
    assert "shipit_cold_start_phase_seconds_bucket" in metrics

    shown = subprocess.run(
        [SHIPIT, "status", "--url", f"http://127.0.0.1:{port}", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(shown.stdout)["deployments"][0]["autoscaling"]["max_replicas"] == 3
    table = subprocess.run(
        [SHIPIT, "status", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "scale to zero" in table.stdout and "load_weights" in table.stdout
