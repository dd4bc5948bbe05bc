"""``shipit up --grpc-port`` for real (uvicorn + uvloop, grpc.aio on the same loop) in front of
an instant fake replica: the Python client streams over HTTP/SSE, WebSocket and gRPC from the
same process, the gRPC health service answers SERVING, and SIGTERM stops it cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shipit.client import Client
from support.replica_process import SHIPIT, free_port

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    fake = subprocess.Popen(
        [sys.executable, "-m", "shipit.bench.instant_server", "--tokens", "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    fake_url = f"http://127.0.0.1:{int(fake.stdout.readline())}"
    port, grpc_port = free_port(), free_port()
    log = Path(tmp_path_factory.mktemp("up")) / "up.log"
    cmd = [SHIPIT, "up", "--replica-url", fake_url, "--replicas", "0", "--model", "m"]
    cmd += ["--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]
    with log.open("wb") as out:
        up = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("shipit up did not become ready:\n" + log.read_text())
        yield url, f"127.0.0.1:{grpc_port}"
        up.terminate()
        assert up.wait(timeout=30) == 0, log.read_text()
        assert "gRPC (shipit.v1.Inference) on 127.0.0.1" in log.read_text()
    finally:
        for proc in (up, fake):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        fake.stdout.close()


@pytest.mark.parametrize("protocol", ["http", "ws", "grpc"])
def test_the_client_streams_over_every_protocol(gateway: tuple[str, str], protocol: str) -> None:
    http_url, grpc_target = gateway
    endpoint = grpc_target if protocol == "grpc" else http_url
    with Client(endpoint, protocol=protocol, timeout_s=30) as client:  # type: ignore[arg-type]
        chunks = list(client.chat_stream(model="m", messages=MESSAGES))
    content = [c["choices"][0]["delta"]["content"] for c in chunks if c.get("choices")]
    assert content == [" hi"] * 4
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_grpc_health_says_serving(gateway: tuple[str, str]) -> None:
    """SERVING once the replica is ready (followed every second)."""
    ask = health_pb2.HealthCheckRequest(service="shipit.v1.Inference")
    with grpc.insecure_channel(gateway[1]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):
            if stub.Check(ask, timeout=10).status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.1)
        assert stub.Check(ask, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
