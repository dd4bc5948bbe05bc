"""The Ray actor's process handling, without Ray: ``wait`` returns the replica's exit status,
``stop`` sends SIGTERM (the replica drains and exits), and on Linux a replica started by an
actor dies with it (parent-death signal), so a lost node never leaves a replica behind."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipit.backends.ray_actor import ReplicaActor


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_wait_returns_the_exit_status() -> None:
    actor = ReplicaActor("r")
    actor.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert asyncio.run(actor.wait()) == 3


def test_stop_sends_sigterm_and_waits() -> None:
    actor = ReplicaActor("r")
    actor.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert asyncio.run(actor.stop(drain_timeout_s=10)) == -signal.SIGTERM
    assert asyncio.run(actor.stop(drain_timeout_s=10)) == -signal.SIGTERM  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_replica_dies_with_its_actor_process() -> None:
    parent = (
        "import signal, subprocess, sys\n"
        "from shipit.backends.child import die_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " preexec_fn=die_with_parent(signal.SIGKILL))\n"  # what the actor passes
        "print(p.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, timeout=60)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = not _gone(child)
    if orphan:
        subprocess.run(["kill", "-9", str(child)], check=False)  # never leave it behind
    assert not orphan, f"orphan {child} outlived its parent"
