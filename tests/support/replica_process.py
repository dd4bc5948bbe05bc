"""Real ``shipit replica`` processes for integration tests: start on a free 127.0.0.1 port,
wait for ``/health``, read ``/metrics``, stop by pid (SIGTERM, then SIGKILL after 30 s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

SHIPIT = str(Path(sys.executable).with_name("shipit"))
SIM = "H100:llama-3.1-70b:tp4"
# Every test replica has this admin token (in its environment, as ``shipit up`` does).
ADMIN_TOKEN = "integration-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    url: str
    model: str
    log: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key="unused", max_retries=0)

    def metrics(self) -> dict[str, float]:
        """Every sample as ``name{labels}`` (label values only) → value."""
        text = httpx.get(self.url + "/metrics").text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                extra = ",".join(
                    f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "model_name"
                )
                out[s.name + (f"{{{extra}}}" if extra else "")] = s.value
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_replica(log_dir: Path, *args: str, model: str) -> Replica:
    port = free_port()
    log = log_dir / f"replica-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [SHIPIT, "replica", "--port", str(port), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "SHIPIT_REPLICA_ADMIN_TOKEN": ADMIN_TOKEN,
            },
        )
    replica = Replica(proc, f"http://127.0.0.1:{port}", model, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(replica.url + "/health", timeout=1).status_code == 200:
                return replica
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    replica.stop()
    raise RuntimeError(f"replica did not become healthy:\n{log.read_text()}")
