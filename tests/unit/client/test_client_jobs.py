"""``client.jobs`` against a real gateway on 127.0.0.1 (scripted replicas): async requests and
batches over HTTP whatever protocol the client streams with, a retried submit queued once, and
failover from an endpoint that does not answer."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from shipit.client import APIConnectionError, APIError, AsyncClient, Client, RetryPolicy
from shipit.services.upstream_fake import FakeReplica
from support.gateway_thread import serve_gateway

ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}
MESSAGES = [{"role": "user", "content": "the capital of France?"}]
NO_WAIT = RetryPolicy(max_retries=2, base_s=0.0, max_s=0.0)


def _jobs(tmp_path: Path) -> dict[str, Any]:
    return {"store_path": str(tmp_path / "jobs.sqlite3"), "poll_interval_s": 0.05}


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_an_async_request_from_a_grpc_client_goes_over_http_and_is_queued_once(
    tmp_path: Path,
) -> None:
    replica = FakeReplica(chunks=[json.dumps(ANSWER).encode()])
    with (
        serve_gateway({"a": replica}, jobs=_jobs(tmp_path)) as gw,
        Client(gw.grpc, protocol="grpc", jobs_url=gw.http, retry=NO_WAIT) as client,
    ):
        first = client.jobs.submit(model="m", messages=MESSAGES, idempotency_key="q-1")
        again = client.jobs.submit(model="m", messages=MESSAGES, idempotency_key="q-1")
        assert first["id"] == again["id"] and first["id"].startswith("areq_")
        done = client.jobs.wait(first["id"], poll_s=0.05, timeout_s=20)
        assert done["status"] == "completed"
        assert client.jobs.result(first["id"]) == ANSWER
    assert len(replica.bodies) == 1
    assert json.loads(replica.bodies[0])["messages"] == MESSAGES


def test_a_grpc_client_without_an_http_url_says_how_to_reach_the_jobs_api() -> None:
    async def go() -> None:
        async with AsyncClient("127.0.0.1:50051", protocol="grpc") as client:
            with pytest.raises(ValueError, match="jobs_url='http://host:port'"):
                _ = client.jobs

    asyncio.run(go())


def test_a_batch_from_lines_runs_and_its_results_come_back_by_custom_id(tmp_path: Path) -> None:
    replica = FakeReplica(chunks=[json.dumps(ANSWER).encode()])
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": str(i)}]},
        }
        for i in range(3)
    ]

    async def go(http: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with AsyncClient(http, retry=NO_WAIT) as client:
            batch = await client.jobs.create_batch(lines, metadata={"run": "t"})
            assert batch["status"] == "in_progress"
            done = await client.jobs.wait_batch(batch["id"], poll_s=0.05, timeout_s=30)
            with pytest.raises(APIError) as err:
                await client.jobs.cancel_batch("batch_nope")
            assert err.value.status == 404
            return done, await client.jobs.batch_results(batch["id"])

    with serve_gateway({"a": replica}, jobs=_jobs(tmp_path)) as gw:
        done, results = asyncio.run(go(gw.http))
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 3
    assert sorted(r["custom_id"] for r in results) == ["q0", "q1", "q2"]
    assert all(r["response"]["body"] == ANSWER for r in results)


def test_jobs_fail_over_from_an_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    replica = FakeReplica(chunks=[json.dumps(ANSWER).encode()])
    with serve_gateway({"a": replica}, jobs=_jobs(tmp_path)) as gw:
        dead = _dead_endpoint()
        with Client([dead, gw.http], retry=NO_WAIT) as client:
            sub = client.jobs.submit(model="m", messages=MESSAGES)
            assert client.jobs.wait(sub["id"], poll_s=0.05, timeout_s=20)["status"] == "completed"
        with Client(dead, retry=NO_WAIT) as client, pytest.raises(APIConnectionError) as err:
            client.jobs.get(sub["id"])
        assert dead in str(err.value)
