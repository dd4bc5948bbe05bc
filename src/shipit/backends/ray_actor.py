"""``ReplicaActor``: the body of the Ray actor that runs one ``shipit replica`` process on its node.

``launch`` picks a free port on the node (on ``host``, else the node's IP as Ray knows it),
spawns ``python -m shipit replica`` with the node's own Python and returns where it listens;
``wait`` returns the process's exit status when it ends (the backend keeps that call pending as
its liveness watch: it fails when the actor or its node dies); ``stop`` sends SIGTERM (the replica
drains) and SIGKILL after the drain timeout. On Linux the replica gets a parent-death signal, so
it never outlives its actor (a killed raylet takes its workers and their replicas with it, as a
lost machine would). The class is plain Python: ``backends.ray`` wraps it with ``ray.remote``, and
Ray imports this module on each node, so it must stay light and import Ray only inside methods.
It is an async actor: its event loop runs on one thread for the actor's life, the thread the
replica is forked from (the parent-death signal follows that thread).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shipit.backends.child import die_with_parent

KILL_GRACE_S = 5.0
POLL_S = 0.2


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ReplicaActor:
    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.proc: subprocess.Popen[bytes] | None = None

    async def launch(
        self,
        args: list[str],
        env: dict[str, str],
        host: str | None,
        log_dir: str | None,
    ) -> dict[str, Any]:
        """Start the replica; returns node id, host, port, pid and log path."""
        import ray

        node_ip: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        bind = host or node_ip
        port = _free_port(bind)
        logs = Path(log_dir or tempfile.gettempdir()) / "shipit-ray-replicas"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{self.replica_id}.log"
        cmd = [sys.executable, "-m", "shipit", "replica", *args, "--host", bind]
        cmd += ["--port", str(port)]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": node_ip,
            "host": bind,
            "port": port,
            "pid": self.proc.pid,
            "log_path": str(log_path),
        }

    async def wait(self) -> int:
        """The replica's exit status, once it has exited."""
        while self.proc is not None and self.proc.poll() is None:
            await asyncio.sleep(POLL_S)
        return self.proc.returncode if self.proc is not None else 0

    async def stop(self, drain_timeout_s: float) -> int:
        """SIGTERM (the replica drains), SIGKILL once the drain timeout and a grace have passed."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + drain_timeout_s + KILL_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            if proc.poll() is None:
                proc.kill()
        return await asyncio.to_thread(proc.wait)
