"""A real ``shipit replica`` process on 127.0.0.1 driven by the official ``openai`` client:
completions and chat, sync and async, streaming and not; errors; metrics that move; LoRA
adapters loaded over HTTP; KV events; client disconnects that abort.

Two processes per module: the tiny checkpoint (real numpy forward pass) and a simulated
H100 replica (real scheduler, steps that take milliseconds, so load is observable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from shipit.engine.block_manager import hash_prompt_blocks
from shipit.engine.loader import load_model
from support.replica_process import ADMIN, SIM, Replica, start_replica
from support.tiny_lora import write_tiny_lora
from support.tiny_model import write_tiny_hf_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    r = start_replica(
        tmp_path_factory.mktemp("logs"),
        "--model",
        str(tiny_dir),
        "--served-model-name",
        "tiny",
        "--max-num-seqs",
        "4",
        "--enable-lora-loading",
        "--lora-root",
        str(tmp_path_factory.getbasetemp()),
        model="tiny",
    )
    yield r
    assert r.stop() == 0, r.log.read_text()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    r = start_replica(
        tmp_path_factory.mktemp("logs"),
        "--simulate",
        SIM,
        "--max-num-seqs",
        "2",
        model="llama-3.1-70b",
    )
    yield r
    assert r.stop() == 0, r.log.read_text()


def test_startup_report_has_every_phase_in_order(tiny: Replica) -> None:
    body = httpx.get(tiny.url + "/shipit/startup", headers=ADMIN).json()
    assert body["ready"] is True and body["weights_source"] == "files"
    assert list(body["phases_s"]) == ["process_start", "imports", "load_weights", "warmup"]
    log = tiny.log.read_text()
    assert "weights of model: files; engine layout " in log  # prepared now or mapped


GREEDY = {"temperature": 0.0, "max_tokens": 8}
MESSAGES = [{"role": "user", "content": "The capital of France is"}]


def test_sync_client_completions_and_chat_streaming_and_not(tiny: Replica) -> None:
    client = tiny.client()
    whole = client.completions.create(model="tiny", prompt="hello world", **GREEDY)
    assert whole.object == "text_completion" and whole.model == "tiny"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 8

    chunks = list(
        client.completions.create(
            model="tiny",
            prompt="hello world",
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8

    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, **GREEDY)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    streamed = list(
        client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True, **GREEDY)
    )
    assert streamed[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in streamed)
    assert text == chat.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in streamed)


def test_async_client_streaming_and_not_concurrently(tiny: Replica) -> None:
    async def main() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=tiny.v1, api_key="unused", max_retries=0)

        async def whole(i: int) -> str:
            r = await client.completions.create(model="tiny", prompt=f"fox {i}", **GREEDY)
            return r.choices[0].text

        async def streamed(i: int) -> str:
            parts = []
            stream = await client.completions.create(
                model="tiny", prompt=f"fox {i}", stream=True, **GREEDY
            )
            async for chunk in stream:
                parts.append(chunk.choices[0].text)
            return "".join(parts)

        a = await asyncio.gather(*(whole(i) for i in range(4)))
        b = await asyncio.gather(*(streamed(i) for i in range(4)))
        await client.close()
        return list(a), list(b)

    whole, streamed = asyncio.run(main())
    assert whole == streamed  # greedy: the same text whichever way it travels


def test_seed_stop_and_logprobs(tiny: Replica) -> None:
    client = tiny.client()
    kwargs = {"model": "tiny", "prompt": "a quick brown", "max_tokens": 12, "temperature": 1.0}
    a = client.completions.create(seed=7, **kwargs).choices[0].text
    b = client.completions.create(seed=7, **kwargs).choices[0].text
    assert a == b
    stop = a[3:5]
    if stop.strip():
        cut = client.completions.create(seed=7, stop=[stop], **kwargs).choices[0]
        assert stop not in cut.text and cut.finish_reason == "stop"
    lp = client.completions.create(model="tiny", prompt="hi", logprobs=2, **GREEDY)
    assert lp.choices[0].logprobs is not None
    assert len(lp.choices[0].logprobs.token_logprobs or []) == 8
    chat = client.chat.completions.create(
        model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=3, **GREEDY
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 8
    assert all(len(t.top_logprobs) == 3 for t in content)


def test_errors_have_openai_shape_and_status(tiny: Replica) -> None:
    client = tiny.client()
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="nope", prompt="x")
    assert nf.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny", prompt="x", temperature=9)
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model="tiny", prompt=[5] * 250, max_tokens=50)
    assert long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert (
        "maximum context length is 256 tokens; your request has 300 tokens (250 in the prompt, "
        "50 for the completion)" in long.value.message
    )
    with pytest.raises(openai.BadRequestError) as unknown:
        client.completions.create(model="tiny", prompt="x", extra_body={"tempertaure": 0})
    assert unknown.value.body["param"] == "tempertaure"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as best_of:
        client.completions.create(model="tiny", prompt="x", best_of=3)
    assert best_of.value.body["param"] == "best_of"  # type: ignore[index]
    assert best_of.value.body["code"] == "unsupported_value"  # type: ignore[index]


def test_metrics_move_and_prefix_hits_rise_when_a_prefix_repeats(tiny: Replica) -> None:
    before = tiny.metrics()
    prompt = list(range(10, 60))  # 50 tokens: three full KV blocks of 16
    client = tiny.client()
    for _ in range(2):
        client.completions.create(model="tiny", prompt=prompt, **GREEDY)
    after = tiny.metrics()
    assert after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"] >= 48
    assert after["vllm:prefix_cache_queries_total"] > before["vllm:prefix_cache_queries_total"]
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 16
    assert after["vllm:prompt_tokens_total"] > before["vllm:prompt_tokens_total"]
    ttft = "vllm:time_to_first_token_seconds_count"
    assert after[ttft] - before[ttft] == 2
    assert (
        after["vllm:e2e_request_latency_seconds_count"]
        > before["vllm:e2e_request_latency_seconds_count"]
    )
    assert (
        after["vllm:inter_token_latency_seconds_count"]
        > before["vllm:inter_token_latency_seconds_count"]
    )
    assert "vllm:num_preemptions_total" in after and "vllm:kv_cache_usage_perc" in after
    assert after["vllm:request_success_total{finished_reason=length}"] >= 2
    assert after["vllm:num_requests_running"] == 0


def test_lora_loaded_over_http_changes_its_model_only(
    tiny: Replica, tiny_dir: Path, tmp_path: Path
) -> None:
    config = load_model(str(tiny_dir)).config
    adapter = write_tiny_lora(tmp_path / "adapter", config, scale=0.5, seed=3)
    client = tiny.client()
    ask = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0.0}
    base_before = client.completions.create(model="tiny", **ask).choices[0].text

    r = httpx.post(
        tiny.v1 + "/load_lora_adapter",
        json={"lora_name": "fr", "lora_path": str(adapter)},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert [m.id for m in client.models.list()] == ["tiny", "fr"]
    with_lora = client.completions.create(model="fr", **ask).choices[0].text
    base_after = client.completions.create(model="tiny", **ask).choices[0].text
    assert with_lora != base_before
    assert base_after == base_before
    info = tiny.metrics()
    assert any(k.startswith("vllm:lora_requests_info{max_lora=4") for k in info)

    r = httpx.post(tiny.v1 + "/unload_lora_adapter", json={"lora_name": "fr"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="fr", **ask)
    r = httpx.post(tiny.v1 + "/unload_lora_adapter", json={"lora_name": "fr"}, headers=ADMIN)
    assert r.status_code == 404


def test_kv_events_match_the_documented_block_hashes(tiny: Replica) -> None:
    first = httpx.get(
        tiny.v1 + "/kv_events", params={"after": -1, "limit": 10_000}, headers=ADMIN
    ).json()
    cursor = first["events"][-1]["seq_no"] if first["events"] else -1
    prompt = list(range(100, 140))  # 40 tokens: two full blocks, then a partial one
    tiny.client().completions.create(model="tiny", prompt=prompt, **GREEDY)
    page = httpx.get(tiny.v1 + "/kv_events", params={"after": cursor}, headers=ADMIN).json()
    assert page["block_size"] == 16 and page["hash_scheme"] == "shipit-kv-v1"
    assert not page["truncated"]
    stored = [e["block_hash"] for e in page["events"] if e["kind"] == "stored"]
    expected = hash_prompt_blocks(prompt, 16)
    assert stored[:2] == expected
    seq = [e["seq_no"] for e in page["events"]]
    assert seq == list(range(cursor + 1, cursor + 1 + len(seq)))
    again = httpx.get(
        tiny.v1 + "/kv_events", params={"after": page["next_after"]}, headers=ADMIN
    ).json()
    assert again["events"] == [] and again["instance_id"] == page["instance_id"]


def test_running_and_waiting_match_the_load(sim: Replica) -> None:
    async def main() -> dict[str, float]:
        client = openai.AsyncOpenAI(base_url=sim.v1, api_key="unused", max_retries=0)

        async def one(i: int) -> str | None:
            stream = await client.completions.create(
                model=sim.model,
                prompt=f"tell me a story number {i}",
                max_tokens=60,
                stream=True,
            )
            last = None
            async for chunk in stream:
                last = chunk.choices[0].finish_reason or last
            return last

        tasks = [asyncio.create_task(one(i)) for i in range(5)]
        seen: dict[str, float] = {}
        for _ in range(200):
            await asyncio.sleep(0.02)
            m = await asyncio.to_thread(sim.metrics)
            if m["vllm:num_requests_running"] == 2 and m["vllm:num_requests_waiting"] == 3:
                seen = m
                break
        reasons = await asyncio.gather(*tasks)
        await client.close()
        assert reasons == ["length"] * 5
        return seen

    seen = asyncio.run(main())
    assert seen, "never saw 2 running and 3 waiting with max-num-seqs 2 and 5 requests"
    assert seen["vllm:kv_cache_usage_perc"] > 0
    done = sim.metrics()
    assert done["vllm:num_requests_running"] == 0 and done["vllm:num_requests_waiting"] == 0


def test_client_disconnect_aborts_and_frees_kv_blocks(sim: Replica) -> None:
    before = sim.metrics()
    body = {"model": sim.model, "prompt": "long story", "max_tokens": 2000, "stream": True}
    with httpx.stream("POST", sim.v1 + "/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert sim.metrics()["vllm:num_requests_running"] == 1
    deadline = time.monotonic() + 10
    m = sim.metrics()
    while m["vllm:num_requests_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
        m = sim.metrics()
    assert m["vllm:num_requests_running"] == 0
    assert m["vllm:kv_cache_usage_perc"] == 0
    aborted = "vllm:request_success_total{finished_reason=abort}"
    assert m.get(aborted, 0) - before.get(aborted, 0) == 1
    assert m["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 2000
