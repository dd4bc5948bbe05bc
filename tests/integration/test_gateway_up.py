"""``shipit up`` as a real process: two tiny-model replicas behind the gateway, the official
``openai`` client through it (sync and async, streamed and not), prefix-cache routing seen in
the gateway's decisions and the replicas' own prefix-cache metrics, a LoRA adapter loaded
through the admin API by ``lora_affinity``, and a clean SIGTERM that stops the replicas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from shipit.engine.loader import load_model
from support.tiny_lora import write_tiny_lora
from support.tiny_model import write_tiny_hf_model
from support.up_process import launch

GREEDY = {"temperature": 0.0, "max_tokens": 6}


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    adapter_dir: Path

    @property
    def v1(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            data: bytes = r.read()
            return data

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.get("/shipit/status"))
        return data


def replica_metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    model_dir = write_tiny_hf_model(root / "model")
    adapter = write_tiny_lora(root / "fr", load_model(str(model_dir)).config, scale=0.5, seed=3)
    cfg = {
        "deployments": [
            {
                "name": "tiny",
                "model": str(model_dir),
                "served_model_name": "tiny",
                "replicas": 2,
                "replica_args": ["--max-num-seqs", "4", "--log-level", "warning"],
                "health_interval_s": 0.2,
                "routing": {
                    "policy": "prefix_cache",
                    "prefix_cache": {"imbalance_abs_requests": 8},
                    "lora_affinity": {"adapters": {"fr": str(adapter)}},
                },
            }
        ]
    }
    proc, port, log = launch(root, cfg, ready_replicas=2)
    u = Up(proc, port, log, adapter)
    yield u
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_openai_sync_client_through_the_gateway(up: Up) -> None:
    client = openai.OpenAI(base_url=up.v1, api_key="unused", max_retries=0)
    whole = client.completions.create(model="tiny", prompt="hello world", **GREEDY)
    assert whole.model == "tiny" and whole.usage is not None and whole.choices[0].text
    parts = [
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="hello world", stream=True, **GREEDY
        )
        if c.choices
    ]
    assert "".join(parts) == whole.choices[0].text  # greedy: same answer, streamed
    messages = [{"role": "user", "content": "The capital of France is"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)  # type: ignore[arg-type]
    streamed = client.chat.completions.create(
        model="tiny",
        messages=messages,
        stream=True,
        **GREEDY,  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content
    assert next(m.id for m in client.models.list()) == "tiny"


def test_openai_async_client_concurrently(up: Up) -> None:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=up.v1, api_key="unused", max_retries=0)

        async def one(i: int) -> str:
            if i % 2:
                r = await client.completions.create(model="tiny", prompt=f"fox {i}", **GREEDY)
                return r.choices[0].text
            stream = await client.completions.create(
                model="tiny", prompt=f"fox {i}", stream=True, **GREEDY
            )
            return "".join([c.choices[0].text async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(i) for i in range(12)))
        finally:
            await client.close()

    assert all(asyncio.run(main()))


def gateway_metric(up: Up, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on the gateway's /metrics carrying all of ``labels``."""
    total = 0.0
    for line in up.get("/metrics").decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_prefix_cache_routing_sends_a_repeated_prefix_to_one_replica(up: Up) -> None:
    client = openai.OpenAI(base_url=up.v1, api_key="unused", max_retries=0)
    system = "You answer in one word. " * 12
    predictions = "shipit_prefix_cache_predictions_total"
    exact_before = gateway_metric(up, predictions, hashing="token", outcome="exact")
    predicted_before = gateway_metric(
        up, "shipit_prefix_cache_blocks_total", hashing="token", source="predicted"
    )
    replicas, routes = [], []
    for i in range(4):
        raw = client.completions.with_raw_response.create(
            model="tiny", prompt=system + f"question {i}", **GREEDY
        )
        replicas.append(raw.headers["x-shipit-replica"])
        routes.append(raw.headers["x-shipit-route"])
    assert len(set(replicas)) == 1
    assert routes[1:] == ["prefix_cache/prefix_hit"] * 3
    urls = {r["id"]: r["url"] for r in up.status()["deployments"][0]["replicas"]}  # type: ignore[index]
    hits = replica_metric(urls[replicas[0]], "vllm:prefix_cache_hits_total")
    assert hits > 0  # the replica really reused the cached prefix
    # The gateway tokenized the text prompts with the model's tokenizer: its predicted hits
    # were the replica's reported cached tokens, to the block, for all four requests.
    exact = gateway_metric(up, predictions, hashing="token", outcome="exact") - exact_before
    assert exact == 4
    predicted = gateway_metric(
        up, "shipit_prefix_cache_blocks_total", hashing="token", source="predicted"
    )
    assert predicted - predicted_before >= 3 * 2  # three hits of a prefix of several blocks


def test_lora_affinity_loads_the_adapter_through_the_admin_api(up: Up) -> None:
    client = openai.OpenAI(base_url=up.v1, api_key="unused", max_retries=0)
    replicas = []
    for _ in range(3):
        raw = client.completions.with_raw_response.create(
            model="fr",
            prompt="The capital of France is",
            extra_headers={"x-shipit-routing": "lora_affinity"},
            **GREEDY,
        )
        replicas.append((raw.headers["x-shipit-replica"], raw.headers["x-shipit-route"]))
        assert raw.parse().choices[0].text
    assert replicas[0][1] == "lora_affinity/adapter_load"
    assert all(r == (replicas[0][0], "lora_affinity/adapter_resident") for r in replicas[1:])
    holders = [
        r["id"]
        for r in up.status()["deployments"][0]["replicas"]  # type: ignore[index]
        if "fr" in r["adapters"]
    ]
    assert holders == [replicas[0][0]]


def test_the_gateway_serves_on_uvloop(up: Up) -> None:
    # uvicorn's loop="uvloop" applies only to loops uvicorn creates; shipit up makes its own.
    assert up.status()["event_loop"] == "uvloop"


def test_metrics_and_sigterm_stop_everything(up: Up) -> None:
    metrics = up.get("/metrics").decode()
    assert 'shipit_requests_total{deployment="tiny",policy="prefix_cache",status="200"}' in metrics
    assert "shipit_time_to_first_token_seconds_bucket" in metrics
    children = subprocess.run(
        ["pgrep", "-P", str(up.proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 2
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    assert "replicas drained and stopped" in up.log.read_text()
