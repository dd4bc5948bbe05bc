"""Batches against a real ``shipit up`` with simulated replicas: the official ``openai``
client's Files + Batches calls work end to end, and a gateway killed with SIGKILL while a
1,000-line batch runs, restarted on the same store (the embedded SQLite file, or a
PostgreSQL server), completes it with every line answered exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app
from support.postgres import PostgresServer, postgres_server
from support.up_process import SIM_MODEL, launch


def _config(root: Path, *, replicas: int, **jobs: Any) -> dict[str, Any]:
    return {
        "alerts": {"enabled": False},
        "jobs": {"store_path": str(root / "jobs.sqlite3"), **jobs},
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": replicas,
                "health_interval_s": 0.2,
                "queueing": {"max_concurrency": 16},
                "replica_args": ["--log-level", "warning"],
            }
        ],
    }


def _jsonl(n: int, *, max_tokens: int = 4) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": SIM_MODEL,
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": max_tokens,
                },
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def _client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=2)


def _wait(client: openai.OpenAI, batch_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout_s}s")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def test_openai_client_files_and_batches_end_to_end(tmp_path: Path) -> None:
    proc, port, log = launch(tmp_path, _config(tmp_path, replicas=1), ready_replicas=1)
    try:
        client = _client(port)
        f = client.files.create(file=("in.jsonl", io.BytesIO(_jsonl(20))), purpose="batch")
        assert (f.purpose, f.bytes) == ("batch", len(_jsonl(20)))
        assert client.files.retrieve(f.id).filename == "in.jsonl"
        batch = client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "nightly"},
        )
        assert batch.status in ("validating", "in_progress")
        done = _wait(client, batch.id, 120)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (20, 20)
        assert done.metadata == {"job": "nightly"}
        assert done.error_file_id is None
        assert done.output_file_id is not None
        lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        assert sorted(x["custom_id"] for x in lines) == sorted(f"line-{i}" for i in range(20))
        for line in lines:
            assert line["response"]["status_code"] == 200
            assert line["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
        assert done.id in [b.id for b in client.batches.list()]
        assert client.files.delete(f.id).deleted
        _cli(tmp_path, port)
    except BaseException:
        print(log.read_text())
        raise
    finally:
        _stop(proc)


def _cli(root: Path, port: int) -> None:
    """``shipit jobs submit --wait`` then ``results`` against the same gateway."""
    url = f"http://127.0.0.1:{port}"
    requests = root / "requests.jsonl"
    requests.write_bytes(_jsonl(3))
    runner = CliRunner()
    app = build_app()
    res = runner.invoke(app, ["jobs", "submit", str(requests), "--wait", "--url", url])
    assert res.exit_code == 0, res.output
    assert "completed  3/3 done, 0 failed" in res.output
    batch_id = res.output.split()[0]
    out = root / "answers.jsonl"
    res = runner.invoke(app, ["jobs", "results", batch_id, "-o", str(out), "--url", url])
    assert res.exit_code == 0, res.output
    assert len(out.read_bytes().splitlines()) == 3
    res = runner.invoke(app, ["jobs", "results", batch_id, "--errors", "--url", url])
    assert res.exit_code == 1
    assert "has no error file" in res.output
    res = runner.invoke(app, ["jobs", "status", "batch_nope", "--url", url])
    assert res.exit_code == 1
    assert "No batch found" in res.output


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_batch_survives_a_killed_gateway_and_answers_each_line_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 1000
    server: dict[str, Any] = {}
    if store == "postgres":
        monkeypatch.setenv(
            "SHIPIT_TEST_JOBS_DB", request.getfixturevalue("pg_server").new_database()
        )
        server = {"store_url_env": "SHIPIT_TEST_JOBS_DB"}
    cfg = _config(tmp_path, replicas=2, lease_s=2.0, **server)
    proc, port, log = launch(tmp_path, cfg, ready_replicas=2)
    try:
        client = _client(port)
        f = client.files.create(
            file=("in.jsonl", io.BytesIO(_jsonl(n, max_tokens=24))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 120
        counts = None
        while time.monotonic() < deadline:
            b = client.batches.retrieve(batch.id)
            counts = b.request_counts
            if counts is not None and counts.completed >= 100:
                break
            time.sleep(0.05)
        assert b.status == "in_progress", f"killed too late to test anything: {b}"
        assert counts is not None and counts.completed < n
        # kill -9 the gateway (no drain, no lease given back), and its replicas with it.
        replicas = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in replicas:
            os.kill(pid, signal.SIGKILL)
    except BaseException:
        print(log.read_text())
        _stop(proc)
        raise
    (tmp_path / "first.log").write_bytes(log.read_bytes())
    proc, port, log = launch(tmp_path, cfg, ready_replicas=2)
    try:
        client = _client(port)
        done = _wait(client, batch.id, 240)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (n, n)
        assert done.request_counts.failed == 0
        assert done.error_file_id is None
        assert done.output_file_id is not None
        lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        ids = [x["custom_id"] for x in lines]
        assert len(ids) == n
        assert sorted(ids) == sorted(f"line-{i}" for i in range(n))  # each once, none lost
        assert all(x["response"]["status_code"] == 200 for x in lines)
    except BaseException:
        print(log.read_text())
        raise
    finally:
        _stop(proc)
