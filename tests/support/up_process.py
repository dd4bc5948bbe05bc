"""A real ``shipit up`` with simulated-accelerator replicas for integration tests: start on a
free 127.0.0.1 port, wait until every replica is ready, send streamed traffic, find a replica's
pid (a child of ``shipit up`` listening on its port), stop by pid (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from support.replica_process import SHIPIT, free_port

SIM_MODEL = "llama-3.1-8b"


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    replicas: int
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/shipit/status", timeout=10).json()
        return data

    def chat(self, client: httpx.Client, i: int) -> int:
        body = {
            "model": SIM_MODEL,
            "messages": [{"role": "user", "content": f"tell me about item {i % 5} please"}],
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with client.stream("POST", self.url + "/v1/chat/completions", json=body) as r:
            for _ in r.iter_bytes():
                pass
            return r.status_code

    def load_in_background(self, *, concurrency: int = 4) -> list[threading.Thread]:
        """Streams in a loop until ``stop_load``; returns the threads (joined by ``stop_load``)."""
        self._stop.clear()

        def worker(k: int) -> None:
            with httpx.Client(timeout=30) as client:
                i = k
                while not self._stop.is_set():
                    try:
                        self.chat(client, i)
                    except httpx.HTTPError:
                        time.sleep(0.1)
                    i += concurrency

        threads = [
            threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)
        ]
        for t in threads:
            t.start()
        return threads

    def stop_load(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        for t in threads:
            t.join(timeout=35)

    def replica_pid(self, replica_url: str) -> int:
        """The pid of the child of ``shipit up`` started with ``--port <that port>``."""
        port = replica_url.rstrip("/").rsplit(":", 1)[1].split("/")[0]
        children: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            children += [int(p) for p in (task / "children").read_text().split()]
        for pid in children:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--port" in argv and argv[argv.index(b"--port") + 1] == port.encode():
                return pid
        raise LookupError(f"no child of shipit up (pid {self.proc.pid}) serves port {port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_up(root: Path, *, replicas: int = 2, extra: dict[str, Any] | None = None) -> Up:
    cfg = {
        "alerts": {"sample_interval_s": 1},
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": replicas,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
                **(extra or {}),
            }
        ],
    }
    proc, port, log = launch(root, cfg, ready_replicas=replicas)
    return Up(proc, port, log, replicas)


def launch(
    root: Path, cfg: dict[str, Any], *, ready_replicas: int, args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Write ``cfg`` as ``root/shipit.yaml``, start ``shipit up`` on a free port and wait until
    ``ready_replicas`` replicas are ready; on failure stop it and raise with its log."""
    (root / "shipit.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = root / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SHIPIT, "up", "--config", str(root / "shipit.yaml"), "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"shipit up exited {proc.returncode}:\n{log.read_text()}")
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            if body.get("ready_replicas") == ready_replicas:
                return proc, port, log
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError("replicas never became ready:\n" + log.read_text())
