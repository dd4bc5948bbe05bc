"""A real multi-node Ray cluster on this machine for integration tests: a head and workers, each
its own ``ray start --block`` process (own resources, own raylet) in a temporary directory of the
test's, joined one after the other. Every process it starts is tracked by pid (the ``ray start``
processes and, sampled, all their descendants with their start times), so ``stop`` kills exactly
those and never Ray processes of anyone else (no ``ray stop``). ``kill_raylet`` SIGKILLs one
node's raylet: the node is lost as if its machine had died.

Ray advertises the machine's own address for its nodes (it rewrites 127.0.0.1 for multi-node
clusters); the replicas and the gateway stay on 127.0.0.1. The GCS health checks are shortened
so a lost node is declared dead in about two seconds instead of thirty.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.replica_process import free_port

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_AUTH_MODE": "disabled",  # no token file written to the home directory
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # How long a starting node's registration is waited for (Ray's default is tight for a
    # loaded 2-core machine running three nodes).
    "RAY_raylet_start_wait_time_s": "120",
}
COMMON = [
    "--block",
    "--disable-usage-stats",
    "--object-store-memory",
    "100000000",
    "--num-cpus",
    "1",
    "--include-log-monitor=false",  # one Python process fewer per node; no logs to a driver
]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def start_time(pid: int) -> str | None:
    """The process's start time (to tell it from a later one with its pid); None once it has
    exited (a zombie waiting to be reaped counts as exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def raylet_pid(self) -> int:
        for pid in descendants(self.proc.pid):
            if Path(cmdline(pid)[0] if cmdline(pid) else "").name == "raylet":
                return pid
        raise LookupError(f"no raylet under node {self.name} (pid {self.proc.pid})")

    def replicas(self) -> dict[int, int]:
        """Port -> pid of the ``shipit replica`` processes running under this node's raylet."""
        found = {}
        for pid in descendants(self.proc.pid):
            argv = cmdline(pid)
            if "replica" in argv and "shipit" in argv and "--port" in argv:
                found[int(argv[argv.index("--port") + 1])] = pid
        return found

    def replica_ports(self) -> set[int]:
        return set(self.replicas())


@dataclass
class LocalRayCluster:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="shipit-ray-")))
    nodes: dict[str, RayNode] = field(default_factory=dict)
    port: int = 0
    _seen: dict[int, str | None] = field(default_factory=dict)  # pid -> start time

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, **ENV}

    def _start(self, name: str, args: list[str], timeout_s: float, attempts: int = 3) -> RayNode:
        """Start a node and wait until it has joined. Ray gives a raylet 30 s to register with
        the GCS, which a loaded 2-core machine can miss: then the attempt is killed and retried."""
        errors = []
        for attempt in range(attempts):
            log = self.root / f"{name}.{attempt}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [RAY, "start", *args, *COMMON],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    start_new_session=True,
                )
            node = RayNode(name, proc, log)
            self.nodes[name] = node
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:  # printed once the node has joined the cluster
                self.track()
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return node
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
            errors.append(log.read_text(errors="replace")[-2000:])
            self._kill([proc.pid, *descendants(proc.pid)])
        raise RuntimeError(f"Ray node {name} did not start:\n" + "\n---\n".join(errors))

    def _kill(self, pids: list[int]) -> None:
        for pid in pids:
            started = self._seen.get(pid)
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def start_head(self, resources: dict[str, float], timeout_s: float = 180) -> RayNode:
        self.port = free_port()
        args = ["--head", "--port", str(self.port), "--include-dashboard=false"]
        args += ["--temp-dir", str(self.root / "tmp"), "--resources", json.dumps(resources)]
        return self._start("head", args, timeout_s)

    def add_worker(self, name: str, resources: dict[str, float], timeout_s: float = 180) -> RayNode:
        args = ["--address", self.address, "--resources", json.dumps(resources)]
        return self._start(name, args, timeout_s)

    def track(self) -> None:
        """Remember every process under the nodes now, so ``stop`` can find orphans later."""
        for node in self.nodes.values():
            for pid in [node.proc.pid, *descendants(node.proc.pid)]:
                self._seen.setdefault(pid, start_time(pid))

    def kill_raylet(self, name: str) -> int:
        self.track()
        pid = self.nodes[name].raylet_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """SIGKILL every process this cluster started (checked by start time against pid reuse)."""
        self.track()
        self._kill(list(self._seen))
        for node in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self, wait_s: float = 10.0) -> list[int]:
        """Tracked processes still running ``wait_s`` after ``stop`` (none, or the test leaks)."""
        deadline = time.monotonic() + wait_s
        while True:
            left = [p for p, s in self._seen.items() if s is not None and start_time(p) == s]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)
