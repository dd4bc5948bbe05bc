"""``shipit up`` stopped by repeated signals, as ``timeout -s INT`` or a supervisor sends them:
a second SIGINT during the drain does not cut the open stream (it finishes, the exit status is
0, no traceback); a third forces the stop, says so, and the exit status says it was forced.
And what a stop leaves behind: the temporary replica log directory is removed, unless
``--log-dir`` names one; a ``shipit up`` killed with SIGKILL (no stop of its own runs) leaves
no replica running: each gets SIGTERM from the kernel and drains."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx

from support.up_process import SIM_MODEL, Up, launch, start_up


def _stream(up: Up, got: dict[str, object], first: threading.Event) -> None:
    body = {
        "model": SIM_MODEL,
        "messages": [{"role": "user", "content": "write a long story"}],
        "max_tokens": 600,
        "ignore_eos": True,
        "stream": True,
    }
    lines: list[str] = []
    try:
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", up.url + "/v1/chat/completions", json=body) as r,
        ):
            got["status"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("data:"):
                    lines.append(line)
                    first.set()
    except httpx.HTTPError as exc:
        got["error"] = repr(exc)
    finally:
        got["lines"] = lines
        first.set()


def _start_stream(up: Up) -> tuple[threading.Thread, dict[str, object]]:
    got: dict[str, object] = {}
    first = threading.Event()
    t = threading.Thread(target=_stream, args=(up, got, first), daemon=True)
    t.start()
    assert first.wait(30), "no chunk arrived"
    return t, got


def test_a_second_sigint_does_not_cut_the_drain(tmp_path: Path) -> None:
    up = start_up(tmp_path, replicas=1)
    try:
        t, got = _start_stream(up)
        up.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        up.proc.send_signal(signal.SIGINT)
        t.join(120)
        code = up.proc.wait(timeout=90)
    finally:
        up.stop()
    log = up.log.read_text()
    lines = got["lines"]
    assert isinstance(lines, list)
    assert "error" not in got, got.get("error")
    assert lines and lines[-1] == "data: [DONE]", f"stream cut after {len(lines)} lines:\n{log}"
    assert code == 0, log
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert "still draining" in log
    [log_dir] = re.findall(r"replica logs: (\S+)", log)
    assert not Path(log_dir).exists(), "the temporary replica log directory was left behind"


def test_log_dir_keeps_the_replica_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    cfg = {
        "deployments": [
            {"name": "sim", "model": SIM_MODEL, "simulate": f"H100:{SIM_MODEL}", "replicas": 1}
        ]
    }
    proc, port, _ = launch(tmp_path, cfg, ready_replicas=1, args=("--log-dir", str(logs)))
    up = Up(proc, port, tmp_path / "up.log", 1)
    up.stop()
    assert proc.returncode == 0
    assert [p.name for p in logs.iterdir()] == ["sim-0.log"]


def test_a_third_signal_forces_and_says_so(tmp_path: Path) -> None:
    up = start_up(tmp_path, replicas=1)
    try:
        [replica] = up.status()["deployments"][0]["replicas"]
        pid = up.replica_pid(replica["url"])
        t, _ = _start_stream(up)
        for _ in range(3):
            up.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        code = up.proc.wait(timeout=60)
        t.join(30)
    finally:
        up.stop()
    log = up.log.read_text()
    assert code == 130, log
    assert "forcing the stop" in log and "stop forced" in log, log
    assert not _alive(pid), "a forced stop must not leave the replica behind"


def test_a_sigkilled_gateway_leaves_no_replica_behind(tmp_path: Path) -> None:
    up = start_up(tmp_path, replicas=1)
    try:
        [replica] = up.status()["deployments"][0]["replicas"]
        pid = up.replica_pid(replica["url"])
        assert _alive(pid)
        up.proc.kill()
        up.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        up.stop()
        orphan = _alive(pid)
        if orphan:
            os.kill(pid, signal.SIGKILL)  # never leave it behind, whatever the test says
    assert not orphan, "the replica outlived its SIGKILLed gateway"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it to reap it has exited)."""
    try:
        os.kill(pid, 0)
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return "\nState:\tZ" not in status
