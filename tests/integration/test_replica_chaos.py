"""Chaos at one replica: while well-formed requests stream through pooled keep-alive
connections, a stream of poison requests (lone surrogates, 50,000-deep nesting, huge integers,
NaN, oversized and truncated bodies, invalid UTF-8, clients that leave mid-stream) hits the same
replica. Every well-formed request must succeed; every poison one must get a 4xx (or, for the
clients that leave, nothing); the replica must report no 5xx."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.app import create_app
from shipit.replica.settings import ReplicaSettings
from support.replica_process import SIM, Replica, start_replica

MODEL = "llama-3.1-70b"
GOOD_REQUESTS = 48
POISON_ROUNDS = 12


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    r = start_replica(
        tmp_path_factory.mktemp("logs"),
        "--simulate",
        SIM,
        "--max-num-seqs",
        "8",
        "--max-body-bytes",
        "200000",
        model=MODEL,
    )
    yield r
    assert r.stop() == 0, r.log.read_text()


def chat(content: str) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return json.dumps(body).encode()


def poison_bodies() -> list[tuple[str, bytes]]:
    deep = b"[" * 50_000 + b"]" * 50_000
    return [
        ("surrogate", chat("x").replace(b'"x"', b'"\\ud800"')),
        ("deep", b'{"model": "%s", "x": %s}' % (MODEL.encode(), deep)),
        ("huge int", b'{"model": "%s", "prompt": "a", "seed": %s}' % (MODEL.encode(), b"9" * 5000)),
        ("NaN", b'{"model": "%s", "prompt": "a", "temperature": NaN}' % MODEL.encode()),
        ("too large", chat("word " * 50_000)),
        ("truncated", chat("hello")[:-7]),
        ("invalid utf-8", b'{"model": "%s", "prompt": "\xff\xfe"}' % MODEL.encode()),
        ("not an object", b"[1, 2, 3]"),
        ("empty", b""),
    ]


async def good_request(client: httpx.AsyncClient, i: int) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {i} please answer"}],
        "max_tokens": 8,
        "stream": i % 2 == 0,
    }
    if body["stream"]:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            text = "".join([chunk async for chunk in r.aiter_text()])
        return r.status_code, text
    r = await client.post("/v1/chat/completions", json=body)
    return r.status_code, r.text


async def poison(client: httpx.AsyncClient, outcomes: list[tuple[str, int]]) -> None:
    for _ in range(POISON_ROUNDS):
        for name, body in poison_bodies():
            path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
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
        sem = asyncio.Semaphore(8)

        async def bounded(i: int) -> tuple[int, str]:
            async with sem:
                return await good_request(good_client, i)

        poisoner = asyncio.gather(*(poison(bad_client, outcomes) for _ in range(3)))
        goods = await asyncio.gather(*(bounded(i) for i in range(GOOD_REQUESTS)))
        await poisoner
        # The same pooled connections serve poison, then good requests, alternately.
        for i in range(6):
            _, body = poison_bodies()[i % 4]
            await good_client.post(
                "/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
            )
            goods.append(await good_request(good_client, 1000 + i))
    return goods, outcomes


def test_poison_under_load_never_fails_a_good_request(replica: Replica, tmp_path: Path) -> None:
    goods, outcomes = asyncio.run(scenario(replica.url))
    bad = [(status, text[:200]) for status, text in goods if status != 200]
    assert not bad, bad
    streamed = [text for status, text in goods if "data:" in text]
    assert streamed and all(t.rstrip().endswith("data: [DONE]") for t in streamed)
    assert len(outcomes) == 3 * POISON_ROUNDS * len(poison_bodies())
    server_errors = [(name, status) for name, status in outcomes if status >= 500]
    assert not server_errors, server_errors
    refused = [(name, status) for name, status in outcomes if name != "too large"]
    assert all(400 <= status < 500 for _, status in refused), refused
    assert {s for n, s in outcomes if n == "too large"} <= {413, -1}
    assert {s for n, s in outcomes if n == "deep"} == {400}
    errors = {k: v for k, v in replica.metrics().items() if "shipit_replica_errors" in k}
    # (a 503 from the start-up health probe, while loading, is expected)
    assert not any("status=5" in k and "status=503" not in k for k in errors), errors
    assert sum(v for k, v in errors.items() if "status=4" in k) >= len(refused)


def test_a_500_closes_its_connection_and_the_pool_recovers() -> None:
    """A replica bug answered on a pooled keep-alive connection: the 500 says
    ``Connection: close``, and the next request on the same one-connection pool succeeds."""

    def exploding(settings: ReplicaSettings) -> LLMEngine:
        engine = build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)
        real = engine.tokenizer.encode

        def encode(text: str, *, add_special_tokens: bool = False) -> list[int]:
            if "boom" in text:
                raise RuntimeError("a bug")
            return real(text, add_special_tokens=add_special_tokens)

        engine.tokenizer.encode = encode  # type: ignore[method-assign]
        return engine

    settings = ReplicaSettings(model="m", simulate="H100:llama-3.1-8b")
    app = create_app(settings, engine_factory=exploding)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=url, limits=limits, timeout=30) as client:
            for _ in range(300):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                threading.Event().wait(0.05)
            for _ in range(3):
                bad = client.post("/v1/completions", json={"model": "m", "prompt": "boom"})
                assert bad.status_code == 500 and bad.headers["connection"] == "close"
                assert bad.json()["error"]["code"] == "internal_error"
                good = client.post("/v1/completions", json={"model": "m", "prompt": "fine"})
                assert good.status_code == 200, good.text
    finally:
        server.should_exit = True
        thread.join(timeout=10)
