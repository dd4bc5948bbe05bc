"""SIGTERM under load against a real ``shipit replica`` process: every in-flight stream
finishes, new requests get 503 with ``Retry-After``, ``/health`` says 503, and the process
exits 0; a drain that times out cuts the streams and still exits 0; a model that cannot load
exits 1. The simulated accelerator makes steps take milliseconds, so streams are in flight
long enough to signal."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import openai

from support.replica_process import SHIPIT, SIM, Replica, free_port, start_replica


async def _stream(
    client: openai.AsyncOpenAI, model: str, i: int, started: asyncio.Event, max_tokens: int
) -> tuple[int, str | None]:
    stream = await client.completions.create(
        model=model,
        prompt=f"story {i}",
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens, reason = 0, None
    async for chunk in stream:
        started.set()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices:
            reason = chunk.choices[0].finish_reason or reason
    return tokens, reason


def test_sigterm_under_load_finishes_streams_and_refuses_new_work(tmp_path: Path) -> None:
    replica = start_replica(
        tmp_path, "--simulate", SIM, "--max-num-seqs", "8", model="llama-3.1-70b"
    )

    async def main() -> tuple[list[tuple[int, str | None]], httpx.Response, int]:
        client = openai.AsyncOpenAI(base_url=replica.v1, api_key="unused", max_retries=0)
        started = [asyncio.Event() for _ in range(6)]
        tasks = [
            asyncio.create_task(_stream(client, replica.model, i, started[i], 80)) for i in range(6)
        ]
        await asyncio.gather(*(e.wait() for e in started))
        replica.proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient() as http:
            refused = None
            for _ in range(500):  # the signal is handled asynchronously
                r = await http.post(
                    replica.v1 + "/completions", json={"model": replica.model, "prompt": "late"}
                )
                if r.status_code == 503:
                    refused = r
                    break
                await asyncio.sleep(0.01)
            assert refused is not None
            health = (await http.get(replica.url + "/health")).status_code
        results = await asyncio.gather(*tasks)
        await client.close()
        return results, refused, health

    results, refused, health = asyncio.run(main())
    assert results == [(80, "length")] * 6
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert health == 503
    assert replica.proc.wait(timeout=30) == 0, replica.log.read_text()
    assert "draining: 6 request(s) in flight" in replica.log.read_text()


def test_drain_timeout_cuts_streams_and_still_exits_zero(tmp_path: Path) -> None:
    replica = start_replica(
        tmp_path, "--simulate", SIM, "--drain-timeout-s", "0.3", model="llama-3.1-70b"
    )

    async def main() -> list[tuple[int, str | None] | BaseException]:
        client = openai.AsyncOpenAI(base_url=replica.v1, api_key="unused", max_retries=0)
        started = asyncio.Event()
        task = asyncio.create_task(_stream(client, replica.model, 0, started, 5000))
        await started.wait()
        replica.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(task, return_exceptions=True)
        await client.close()
        return results

    (result,) = asyncio.run(main())
    assert isinstance(result, BaseException) or result[1] != "length"
    assert replica.proc.wait(timeout=30) == 0, replica.log.read_text()
    assert "cancelling 1 request(s)" in replica.log.read_text()


def test_a_model_that_cannot_load_exits_one(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [SHIPIT, "replica", "--model", str(tmp_path / "missing"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no such file or directory" in proc.stderr


__all__ = ["Replica"]
