"""Chaos at the gateway: a real ``shipit up`` with three simulated replicas. While clients
stream well-formed chat requests through it, another client sends poison (lone surrogates,
50,000-deep nesting, 5,000-digit integers, NaN, bodies over the gateway's limit, truncated and
invalid-UTF-8 JSON, wrong types, clients that leave mid-stream). Every well-formed request must
succeed, every poison one must get a 4xx (or, for a body over the limit, a 413 or a closed
socket), and no replica may be ejected or leave the ready state: poison is the client's fault,
never the replica's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from support.up_process import SIM_MODEL, Up, launch

MODEL = SIM_MODEL
REPLICAS = 3
GOOD_REQUESTS = 48
GOOD_CLIENTS = 6
POISON_ROUNDS = 8
MAX_BODY = 200_000


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    cfg = {
        "gateway": {"limits": {"max_body_bytes": MAX_BODY}},
        "deployments": [
            {
                "name": "sim",
                "model": MODEL,
                "simulate": f"H100:{MODEL}",
                "replicas": REPLICAS,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
            }
        ],
    }
    proc, port, log = launch(root, cfg, ready_replicas=REPLICAS)
    u = Up(proc, port, log, REPLICAS)
    yield u
    u.stop()


def chat(content: str, **extra: object) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return json.dumps({**body, **extra}).encode()


def poison_bodies() -> list[tuple[str, str, bytes]]:
    deep = b"[" * 50_000 + b"]" * 50_000
    m = MODEL.encode()
    chat_path, completions = "/v1/chat/completions", "/v1/completions"
    return [
        ("surrogate", chat_path, chat("x").replace(b'"x"', b'"\\ud800"')),
        ("surrogate prompt", completions, b'{"model": "%s", "prompt": "\\udfff"}' % m),
        ("deep", chat_path, b'{"model": "%s", "x": %s}' % (m, deep)),
        ("deep prompt", completions, b'{"model": "%s", "prompt": %s}' % (m, deep)),
        ("huge int", completions, b'{"model": "%s", "prompt": "a", "seed": %s}' % (m, b"9" * 5000)),
        (
            "huge max_tokens",
            completions,
            b'{"model": "%s", "prompt": "a", "max_tokens": %s}' % (m, b"9" * 5000),
        ),
        ("NaN", completions, b'{"model": "%s", "prompt": "a", "temperature": NaN}' % m),
        ("too large", chat_path, chat("word " * 50_000)),
        ("truncated", chat_path, chat("hello")[:-7]),
        ("invalid utf-8", completions, b'{"model": "%s", "prompt": "\xff\xfe"}' % m),
        ("not an object", chat_path, b"[1, 2, 3]"),
        ("empty", chat_path, b""),
        ("model not a string", chat_path, b'{"model": 7, "messages": []}'),
        (
            "messages not a list",
            chat_path,
            chat("x").replace(b'[{"role"', b'{"x": [{"role"').replace(b"}]", b"}]}"),
        ),
        ("stream not a bool", chat_path, chat("x", stream="yes")),
        ("max_tokens a string", chat_path, chat("x", max_tokens="5")),
        ("role unknown", chat_path, chat("x").replace(b'"user"', b'"wizard"')),
        (
            "token ids out of range",
            completions,
            b'{"model": "%s", "prompt": [-1, 99999999999]}' % m,
        ),
        ("tokenize deep", "/tokenize", b'{"model": "%s", "prompt": %s}' % (m, deep)),
        ("detokenize bad", "/detokenize", b'{"model": "%s", "tokens": ["a", {}]}' % m),
    ]


async def good_request(client: httpx.AsyncClient, i: int) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {i} please answer"}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        text = "".join([chunk async for chunk in r.aiter_text()])
    return r.status_code, text


async def poison(client: httpx.AsyncClient, outcomes: list[tuple[str, int]]) -> None:
    for _ in range(POISON_ROUNDS):
        for name, path, body in poison_bodies():
            try:
                r = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                outcomes.append((name, r.status_code))
            except httpx.TransportError:  # the 413 may close the socket mid-upload
                outcomes.append((name, -1))
        # A client that leaves mid-stream.
        body = {"model": MODEL, "prompt": "leave early", "max_tokens": 64, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as r:
            async for _ in r.aiter_bytes():
                break


async def scenario(url: str) -> tuple[list[tuple[int, str]], list[tuple[str, int]]]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    outcomes: list[tuple[str, int]] = []
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as good_client,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as bad_client,
    ):
        poisoner = asyncio.gather(*(poison(bad_client, outcomes) for _ in range(2)))
        goods: list[tuple[int, str]] = []

        async def client(k: int) -> None:
            # Stream until the poison is all sent (and at least GOOD_REQUESTS in all).
            i = k
            while not poisoner.done() or len(goods) < GOOD_REQUESTS:
                goods.append(await good_request(good_client, i))
                i += GOOD_CLIENTS

        await asyncio.gather(*(client(k) for k in range(GOOD_CLIENTS)))
        await poisoner
    return goods, outcomes


def test_poison_under_load_fails_no_good_request_and_ejects_no_replica(up: Up) -> None:
    goods, outcomes = asyncio.run(scenario(up.url))
    bad = [(status, text[:200]) for status, text in goods if status != 200]
    assert not bad, bad
    assert all(t.rstrip().endswith("data: [DONE]") for _, t in goods)
    assert len(outcomes) == 2 * POISON_ROUNDS * len(poison_bodies())
    server_errors = [(name, status) for name, status in outcomes if status >= 500]
    assert not server_errors, server_errors
    refused = [(name, status) for name, status in outcomes if name != "too large"]
    assert all(400 <= status < 500 for _, status in refused), refused
    assert {s for n, s in outcomes if n == "too large"} <= {413, -1}
    assert {s for n, s in outcomes if n == "too large"} & {413}
    # No replica was ejected or left the ready state.
    replicas = [r for d in up.status()["deployments"] for r in d["replicas"]]
    assert len(replicas) == REPLICAS
    assert all(r["state"] == "ready" and r["ejected_until_s"] is None for r in replicas), replicas
    metrics = httpx.get(up.url + "/metrics", timeout=10).text
    ejections = [
        line for line in metrics.splitlines() if line.startswith("shipit_outlier_ejections_total{")
    ]
    assert len(ejections) == REPLICAS, ejections
    assert all(line.endswith(" 0.0") for line in ejections), ejections
