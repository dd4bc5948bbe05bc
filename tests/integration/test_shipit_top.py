"""``shipit top`` against a live ``shipit up`` (simulated replicas) under load: run in a real
terminal (tmux, Debian package ``tmux``) and read its screen with ``capture-pane``; and
``--once`` as a plain subprocess. Skipped where tmux is missing (the ``--once`` test runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.replica_process import SHIPIT
from support.up_process import Up, start_up

TMUX = shutil.which("tmux")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    u = start_up(tmp_path_factory.mktemp("up"), replicas=2)
    try:
        yield u
    finally:
        u.stop()


def deployment_row(screen: str, name: str) -> list[str]:
    """The cells of ``name``'s row in the deployments table (Rich draws cells between │)."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 5 and cells[1] == name and cells[3].count("/") == 1:
            return cells[1:-1]
    return []


def replica_ids(screen: str) -> set[str]:
    return {c.strip() for line in screen.splitlines() for c in line.split("│") if "sim-" in c}


@pytest.mark.skipif(TMUX is None, reason="tmux not installed; apt-get install -y tmux")
def test_top_in_a_terminal_shows_deployment_replicas_and_traffic(up: Up, tmp_path: Path) -> None:
    assert TMUX is not None
    sock = f"shipit-top-{os.getpid()}"
    tmux = [TMUX, "-L", sock, "-f", "/dev/null"]
    cmd = f"{SHIPIT} top --url {up.url} --interval-s 0.5"
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "top", "-x", "220", "-y", "50", cmd],
        check=True,
        env=env,
        timeout=10,
    )
    threads = up.load_in_background()
    screen, row = "", []
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "top"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            row = deployment_row(screen, "sim")
            if row and row[3] not in ("-", "0.0") and len(replica_ids(screen)) == 2:
                break
            time.sleep(0.5)
    finally:
        up.stop_load(threads)
        subprocess.run([*tmux, "kill-server"], timeout=10, check=False)
    (tmp_path / "screen.txt").write_text(screen)
    assert row, f"no 'sim' deployment row on screen:\n{screen}"
    assert row[2] == "2/2"  # ready replicas
    assert float(row[3]) > 0, f"req/s not above 0:\n{screen}"  # req/s
    assert replica_ids(screen) == {"sim-0", "sim-1"}, screen
    assert "alerts (0)" in screen


def test_top_once_prints_one_frame(up: Up) -> None:
    threads = up.load_in_background(concurrency=2)
    try:
        done = subprocess.run(
            [SHIPIT, "top", "--url", up.url, "--once", "--interval-s", "1.5"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "220"},
        )
    finally:
        up.stop_load(threads)
    assert done.returncode == 0, done.stderr
    row = deployment_row(done.stdout, "sim")
    assert row and float(row[3]) > 0, done.stdout
    assert replica_ids(done.stdout) == {"sim-0", "sim-1"}


def test_top_says_what_is_wrong_when_nothing_listens() -> None:
    done = subprocess.run(
        [SHIPIT, "top", "--url", "http://127.0.0.1:9", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "is `shipit up` running?" in " ".join((done.stdout + done.stderr).split())
