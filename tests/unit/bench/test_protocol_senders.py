"""``shipit bench --protocol``: the same load over HTTP (one JSON answer), SSE, WebSocket and
gRPC against a gateway on 127.0.0.1 gives the same request records (content chunks, usage,
no failures), and a refused request is recorded as a failure, not lost."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shipit.bench.api import run_bench
from shipit.bench.config import BenchConfig, LoadConfig, TargetConfig, WorkloadConfig
from shipit.services.upstream_fake import FakeReplica
from support.gateway_thread import serve_gateway

STREAM = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    *[b'data: {"choices":[{"index":0,"delta":{"content":" t%d"}}]}\n\n' % i for i in range(3)],
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,'
    b'"total_tokens":8}}\n\ndata: [DONE]\n\n',
]
ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": " t0 t1 t2"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


def bench(url: str, protocol: str) -> dict[str, Any]:
    cfg = BenchConfig(
        target=TargetConfig(url=url, model="m", protocol=protocol, timeout_s=10),  # type: ignore[arg-type]
        workload=WorkloadConfig(input_tokens="16", output_tokens="3"),
        load=LoadConfig(num_requests=4, concurrencies=(2,)),
    )
    return asyncio.run(run_bench(cfg))


@pytest.mark.parametrize("protocol", ["sse", "http", "ws", "grpc"])
def test_every_protocol_records_the_same_requests(protocol: str) -> None:
    streamed = protocol != "http"
    a = FakeReplica(chunks=STREAM if streamed else [json.dumps(ANSWER).encode()])
    with serve_gateway({"a": a}) as gw:
        result = bench(gw.endpoint(protocol), protocol)
    (point,) = result["points"]
    s = point["summary"]
    assert (s["requests"], s["completed"], s["failed"]) == (4, 4, 0)
    assert s["tokens_source"] == "usage" and s["output_tokens"] == 4 * 3
    sent = [json.loads(b) for b in a.bodies]
    assert len(sent) == 5  # the warm-up request too
    assert all(b["stream"] is streamed for b in sent)
    for row in point["requests"]:
        assert row["ttft_ms"] <= row["e2e_ms"]


@pytest.mark.parametrize("protocol", ["ws", "grpc"])
def test_a_replica_error_is_a_recorded_failure(protocol: str) -> None:
    a = FakeReplica(status=400, chunks=[b'{"error": {"message": "no"}}'])
    with serve_gateway({"a": a}) as gw:
        result = bench(gw.endpoint(protocol), protocol)
    s = result["points"][0]["summary"]
    assert (s["completed"], s["failed"]) == (0, 4)
    errors = {row["error"] for row in result["points"][0]["requests"]}
    assert errors == ({"http_400"} if protocol == "ws" else {"grpc_invalid_argument"})
