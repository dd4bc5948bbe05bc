"""A newcomer's first run, end to end, with the real packaged model (not simulated replicas):
a fresh HOME (no model cache), the README's minimal ``shipit.yaml`` taken from the README
itself (two replicas, autoscaling 0..3), ``shipit up``; both replicas become ready although
they start together on an empty cache (the default weights are converted once, the other
replica waits), the README's first request is answered, nothing is scaled down before
``idle_timeout_s`` (the policy once treated "never active" as idle forever), and Ctrl-C stops
everything with exit status 0 and no temporary directory left behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from support.replica_process import SHIPIT, free_port

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_config() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "deployments:" in b]
    config: dict[str, Any] = yaml.safe_load(block)
    return config


def status(port: int) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/shipit/status", timeout=10).json()
    return data


def test_the_readme_walk_through_on_a_fresh_machine(tmp_path: Path) -> None:
    cfg = readme_config()
    (dep,) = cfg["deployments"]
    assert dep["replicas"] == 2 and dep["autoscaling"]["min_replicas"] == 0  # the premise
    (tmp_path / "shipit.yaml").write_text(yaml.safe_dump(cfg))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SHIPIT_HOME"} | {"HOME": str(home)}
    logs = tmp_path / "replica-logs"
    port = free_port()
    out = tmp_path / "up.log"
    argv = [SHIPIT, "up", "-c", str(tmp_path / "shipit.yaml"), "--port", str(port)]
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*argv, "--log-dir", str(logs)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 240
        ready = 0
        while time.monotonic() < deadline and ready < 2:
            assert proc.poll() is None, out.read_text()
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                ready = health["ready_replicas"]
            time.sleep(0.5)
        assert ready == 2, "both replicas never became ready:\n" + out.read_text()

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-")
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct",
            temperature=0,
            max_tokens=12,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        assert "Paris" in (answer.choices[0].message.content or "")

        auto = status(port)["deployments"][0]["autoscaling"]
        idle_timeout_s = 300  # the default: the README's block does not set it
        assert auto["min_replicas"] == 0 and auto["max_replicas"] == 3
        downs = [d for d in auto["decisions"] if d["target"] < d["current"]]
        assert downs == [], f"scaled down long before idle_timeout_s ({idle_timeout_s}s): {downs}"
        states = [r["state"] for r in status(port)["deployments"][0]["replicas"]]
        assert states == ["ready", "ready"]
        assert status(port)["uptime_s"] < idle_timeout_s  # the check above means something
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    text = out.read_text()
    assert code == 0, text
    replica_logs = [p.read_text() for p in sorted(logs.iterdir())]
    converted = [log for log in replica_logs if "converting GGUF to safetensors" in log]
    assert len(converted) == 1, "the default weights were converted more than once"
    assert (home / ".cache" / "shipit" / "models" / "smollm2-135m-instruct").is_dir()
