"""A replica killed under load (SIGKILL, no drain) behind a real ``shipit up`` with simulated
accelerators: requests not yet started on it are retried on the others and succeed; streams
that were running on it end with an error the client sees; nothing is lost silently."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import openai

from support.replica_process import SHIPIT, free_port

SIM = "H100:llama-3.1-8b"


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        data: bytes = r.read()
        return data


async def _one(client: openai.AsyncOpenAI, i: int) -> str:
    """'ok' for a complete answer, 'error' for one the client was told failed, else 'silent'."""
    try:
        if i % 2:
            r = await client.completions.create(
                model="llama-3.1-8b", prompt=f"q{i}", max_tokens=24, temperature=0.0
            )
            return "ok" if r.choices[0].finish_reason else "silent"
        stream = await client.completions.create(
            model="llama-3.1-8b", prompt=f"q{i}", max_tokens=24, stream=True, temperature=0.0
        )
        finish = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return "ok" if finish else "silent"
    except openai.APIError:
        return "error"


def test_killed_replica_requests_are_retried_elsewhere_and_none_is_lost(tmp_path: Path) -> None:
    cfg = tmp_path / "shipit.yaml"
    cfg.write_text(
        json.dumps(
            {
                "deployments": [
                    {
                        "replicas": 3,
                        "simulate": SIM,
                        "model": "llama-3.1-8b",
                        "health_interval_s": 5.0,
                        "routing": {"policy": "round_robin"},
                        "replica_args": ["--log-level", "warning"],
                    }
                ]
            }
        )
    )
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SHIPIT, "up", "-c", str(cfg), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if json.loads(_get(port, "/health"))["ready_replicas"] == 3:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 3

        async def main() -> tuple[list[str], list[str]]:
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
            )
            try:
                first = [asyncio.create_task(_one(client, i)) for i in range(24)]
                await asyncio.sleep(0.05)
                os.kill(int(children[0]), signal.SIGKILL)
                second = await asyncio.gather(*(_one(client, i) for i in range(24, 48)))
                return list(await asyncio.gather(*first)), list(second)
            finally:
                await client.close()

        during, after = asyncio.run(main())
        assert "silent" not in during + after
        assert after == ["ok"] * 24  # not yet started on the dead replica: retried elsewhere
        metrics = _get(port, "/metrics").decode()
        retries = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("shipit_retries_total")
        )
        assert retries >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
