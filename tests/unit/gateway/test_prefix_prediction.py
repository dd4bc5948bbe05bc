"""Prefix-cache prediction checked against the replica: requests through the in-process gateway
(scripted replicas that report ``prompt_tokens_details.cached_tokens``) count, per hashing mode,
whether the index's predicted hit on the chosen replica was exact, over or under."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.engine.loader import load_tokenizer
from shipit.gateway.accounting import prefix_blocks
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.replica import protocol
from shipit.replica.requests import chat_request
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call
from support.tiny_model import write_tiny_hf_model

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "Tell me about the weather in Paris today. " * 4}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")


def answer(prompt_tokens: int, cached_tokens: int) -> list[bytes]:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 1,
        "total_tokens": prompt_tokens + 1,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }
    return [
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
        b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n",
        b"data: [DONE]\n\n",
    ]


def gateway(model: str, replica: FakeReplica) -> Gateway:
    routing = {"policy": "prefix_cache", "prefix_cache": {"block_size_tokens": 16}}
    dep = {"model": model, "served_model_name": "tiny", "replicas": 0, "routing": routing}
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(
        parse_config({"deployments": [dep]}),
        clock=FakeClock(),
        upstream_factory=lambda: upstream,
        monitor=False,
    )
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    return gw


def prefix_series(text: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("shipit_prefix_cache_") and s.name.endswith("_total"):
                labels = tuple(v for k, v in sorted(s.labels.items()) if k != "deployment")
                out[(s.name, *labels)] = s.value
    return out


def run_requests(gw: Gateway, replica: FakeReplica, answers: list[list[bytes]]) -> str:
    async def main() -> str:
        async with running(gw):
            for chunks in answers:
                replica.chunks = chunks
                res = await call(gw, "POST", "/v1/chat/completions", CHAT)
                assert res.status == 200, res.body
            return (await call(gw, "GET", "/metrics")).body.decode()

    return asyncio.run(main())


def test_token_hashing_predictions_are_compared_with_the_cached_tokens_reported(
    model_dir: Path,
) -> None:
    # The prompt as the replica tokenizes it (its own code path), and its full blocks.
    body = protocol.validate_body(CHAT, protocol.ChatBody)
    prompt = len(chat_request(body, load_tokenizer(str(model_dir)), 100_000).prompt_token_ids)
    assert prompt % 16 != 0  # so every full block of the prompt can be a cache hit
    full = prompt // 16
    assert full >= 2
    replica = FakeReplica()
    gw = gateway(str(model_dir), replica)
    metrics = run_requests(
        gw,
        replica,
        [
            answer(prompt, 0),  # first sight: nothing predicted, nothing cached
            answer(prompt, 0),  # the index predicts every block, the replica lost them all
            answer(prompt, 16),  # predicted all, the replica had one
            answer(prompt, full * 16),  # predicted all, all there
        ],
    )
    got = prefix_series(metrics)
    predictions = "shipit_prefix_cache_predictions_total"
    assert got[(predictions, "token", "exact")] == 2
    assert got[(predictions, "token", "over")] == 2
    assert (predictions, "token", "under") not in got
    assert (predictions, "text", "exact") not in got
    blocks = "shipit_prefix_cache_blocks_total"
    assert got[(blocks, "token", "predicted")] == 3 * full
    assert got[(blocks, "token", "reported")] == 1 + full
    assert got[("shipit_prefix_cache_mispredicted_blocks_total", "token")] == full + (full - 1)


def test_text_hashing_is_labelled_text(model_dir: Path) -> None:
    replica = FakeReplica()
    gw = gateway(str(model_dir / "missing"), replica)  # no tokenizer: the approximation
    got = prefix_series(run_requests(gw, replica, [answer(100, 32)]))
    assert got[("shipit_prefix_cache_predictions_total", "text", "under")] == 1
    assert got[("shipit_prefix_cache_blocks_total", "text", "reported")] == 2
    assert not any(key[1:2] == ("token",) for key in got)


def test_answers_without_cached_tokens_are_not_counted(model_dir: Path) -> None:
    replica = FakeReplica()
    gw = gateway(str(model_dir), replica)
    no_usage = FakeReplica().chunks  # a stream without a usage chunk
    assert prefix_series(run_requests(gw, replica, [no_usage])) == {}
    assert gw.prompt_tokenizers  # token hashing was on: the answer just reported nothing


def test_every_door_hashes_with_the_gateways_tokenizers(model_dir: Path) -> None:
    gw = gateway(str(model_dir), FakeReplica())
    assert set(gw.prompt_tokenizers) == {"default"}
    assert gw.websocket.tokenizers is gw.prompt_tokenizers  # /v1/ws
    assert gw.jobs.tokenizers is gw.prompt_tokenizers  # batch and async jobs


@pytest.mark.parametrize(
    ("predicted", "cached", "prompt", "expected"),
    [
        (4, 64, 80, (4, 4)),
        (5, 16, 65, (4, 1)),  # at most 4 full blocks before the last token of 65
        (4, 48, 64, (3, 3)),  # 64 tokens: the replica recomputes the 4th block's last token
        (2, 0, None, (2, 0)),  # prompt tokens not reported: not capped
    ],
)
def test_predicted_blocks_are_capped_at_what_a_replica_can_report(
    predicted: int, cached: int, prompt: int | None, expected: tuple[int, int]
) -> None:
    assert prefix_blocks(predicted, cached, prompt, 16) == expected
