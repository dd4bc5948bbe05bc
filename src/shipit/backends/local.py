"""``LocalProcessBackend``: replicas as ``shipit replica`` processes on 127.0.0.1.

Owns the child processes: each gets a free port (bound to port 0 and released just before the
spawn), its own session (so a terminal's Ctrl-C reaches the gateway, which then drains the
replicas in order, rather than every process at once), and a log file. ``stop`` sends SIGTERM
to that pid (the replica drains) and SIGKILL only after the drain timeout. It never kills by
name and never touches a process it did not start. The replicas' admin token, when given, reaches
each child in its environment (``SHIPIT_REPLICA_ADMIN_TOKEN``), never on its command line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from shipit.backends.base import ReplicaHandle, ReplicaSpec
from shipit.backends.child import die_with_parent
from shipit.core.replica_admin import ADMIN_TOKEN_ENV

KILL_GRACE_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LocalProcessBackend:
    def __init__(
        self,
        *,
        log_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        admin_token: str | None = None,
    ) -> None:
        self.host = host
        self._admin_token = admin_token
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="shipit-replicas-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._handles: dict[str, ReplicaHandle] = {}
        self._specs: dict[str, ReplicaSpec] = {}
        self._seq = 0

    def command(self, spec: ReplicaSpec, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "shipit", "replica", "--model", spec.model]
        cmd += ["--host", self.host, "--port", str(port)]
        cmd += ["--drain-timeout-s", str(spec.drain_timeout_s)]
        if spec.simulate:
            cmd += ["--simulate", spec.simulate]
        return cmd + list(spec.extra_args)

    def environment(self, spec: ReplicaSpec) -> dict[str, str]:
        """The child's environment: ours, the spec's, and the admin token (in the environment,
        never on the command line, where every user of the machine could read it)."""
        env = {**os.environ, **dict(spec.env)}
        if self._admin_token:
            env[ADMIN_TOKEN_ENV] = self._admin_token
        return env

    async def start(self, spec: ReplicaSpec, count: int) -> list[ReplicaHandle]:
        handles = []
        for _ in range(count):
            replica_id = f"{spec.deployment}-{self._seq}"
            self._seq += 1
            port = free_port(self.host)
            log_path = self.log_dir / f"{replica_id}.log"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    self.command(spec, port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(spec),
                    start_new_session=True,
                    # A gateway killed with SIGKILL runs no stop: its replicas drain and exit
                    # on their own instead of holding their ports and memory for good.
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
            handle = ReplicaHandle(
                replica_id,
                f"http://{self.host}:{port}",
                spec.deployment,
                pid=proc.pid,
                log_path=str(log_path),
            )
            self._procs[replica_id] = proc
            self._handles[replica_id] = handle
            self._specs[replica_id] = spec
            handles.append(handle)
        return handles

    def list(self) -> list[ReplicaHandle]:
        return list(self._handles.values())

    def alive(self, handle: ReplicaHandle) -> bool:
        proc = self._procs.get(handle.replica_id)
        return proc is not None and proc.poll() is None

    async def stop(self, handle: ReplicaHandle) -> None:
        proc = self._procs.pop(handle.replica_id, None)
        self._handles.pop(handle.replica_id, None)
        spec = self._specs.pop(handle.replica_id, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            drain_s = (spec.drain_timeout_s if spec else 30.0) + KILL_GRACE_S
            try:
                await asyncio.to_thread(proc.wait, drain_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            except asyncio.CancelledError:  # a forced stop: never leave the child behind
                proc.kill()
                proc.wait()
                raise

    async def kill(self, handle: ReplicaHandle) -> None:
        """SIGKILL one replica, no drain: for failure tests and stuck processes."""
        proc = self._procs.get(handle.replica_id)
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(h) for h in self.list()))
