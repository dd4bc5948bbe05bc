"""Token-exact prefix hashing at the gateway: the hashes it computes for text and chat prompts
are the block hashes the replica's engine stores (read back from its KV-event feed), chat bodies
render to the replica's own token ids (tools, tool calls, content parts), and without a tokenizer
the character approximation is used, said once in the log. Config errors name the field."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from shipit.config.gateway import ConfigError, DeploymentConfig, parse_config
from shipit.core.views import RequestView
from shipit.engine.loader import load_tokenizer
from shipit.engine.tokenizer import Tokenizer
from shipit.gateway.parse import OFF_LOOP_BYTES, parse_request, parse_request_async
from shipit.gateway.prompt_tokens import PromptTokenizer, load_prompt_tokenizers
from shipit.replica import protocol
from shipit.replica.app import create_app
from shipit.replica.requests import chat_request
from shipit.replica.settings import ReplicaSettings
from support.asgi import call
from support.tiny_model import CHATML_TEMPLATE, write_tiny_hf_model

BLOCK = 16  # the engine's default KV block size
ADMIN = "t" * 32

TEXT = "The quick brown fox jumps over the lazy dog. " * 6
CHAT = {
    "model": "tiny",
    "messages": [
        {"role": "system", "content": "You are a terse assistant that answers in one word."},
        {"role": "user", "content": "Name the colour of the sky on a clear day, please. " * 3},
    ],
}
TOOLS = [
    {
        # keys out of the request model's order, a null field: the replica re-orders and drops
        "function": {
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "description": None,
            "name": "get_weather",
        },
        "type": "function",
    }
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")


def deployment(model: str, **prefix_cache: Any) -> DeploymentConfig:
    routing = {"policy": "prefix_cache", "prefix_cache": {"block_size_tokens": BLOCK}}
    routing["prefix_cache"] |= prefix_cache  # type: ignore[operator]
    dep = {"name": "d", "model": model, "served_model_name": "tiny", "routing": routing}
    return parse_config({"deployments": [dep]}).deployments[0]


def view(dep: DeploymentConfig, path: str, body: dict[str, Any]) -> RequestView:
    return parse_request(
        request_id="q", path=path, headers={}, body=json.dumps(body).encode(),
        deployments={"d": dep}, adapters={}, now_s=0.0,
        tokenizers=load_prompt_tokenizers([dep]),
    )  # fmt: skip


def test_gateway_hashes_are_the_replicas_stored_block_hashes(model_dir: Path) -> None:
    """A text completion and a chat request through an in-process replica of the tiny model:
    the blocks its engine stored (its KV-event feed) begin with exactly the gateway's hashes."""
    dep = deployment(str(model_dir))
    requests = [
        ("/v1/completions", {"model": "tiny", "prompt": TEXT}),
        ("/v1/chat/completions", CHAT),
    ]

    async def main() -> list[tuple[tuple[int, ...], list[int]]]:
        app = create_app(
            ReplicaSettings(model=str(model_dir), served_model_name="tiny", admin_token=ADMIN)
        )
        replica = app.state.replica
        await replica.load()
        out = []
        after = -1
        for path, body in requests:
            answer = await call(app, "POST", path, body | {"max_tokens": 1, "temperature": 0})
            assert answer.status == 200, answer.body
            auth = {"authorization": f"Bearer {ADMIN}"}
            events = await call(app, "GET", f"/v1/kv_events?after={after}", headers=auth)
            assert events.status == 200, events.body
            page = events.json()
            after = page["next_after"]
            stored = [e["block_hash"] for e in page["events"] if e["kind"] == "stored"]
            got = view(dep, path, body)
            # The same prompt, to the token: the replica's count is the gateway's.
            assert got.prompt_tokens_estimate == answer.json()["usage"]["prompt_tokens"]
            out.append((got.prefix_hashes, stored))
        await replica.close()
        return out

    for hashes, stored in asyncio.run(main()):
        assert len(hashes) >= 3  # several blocks, so the chain is really compared
        assert stored[: len(hashes)] == list(hashes)
    # The character approximation of the same prompt is not what the replica stored.
    approx = view(deployment(str(model_dir), tokenizer="none"), "/v1/completions", requests[0][1])
    assert approx.prefix_hashing == "text" and not set(approx.prefix_hashes) & set(stored)


def _replica_ids(tokenizer: Tokenizer, body: dict[str, Any]) -> list[int]:
    parsed = protocol.validate_body({"model": "tiny", **body}, protocol.ChatBody)
    return chat_request(parsed, tokenizer, 100_000).prompt_token_ids


TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    + CHATML_TEMPLATE
)
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"a":1}'}}


@pytest.mark.parametrize("template", ["plain", "tools-aware"])
@pytest.mark.parametrize(
    "body",
    [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS},
        {
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": TOOLS,
            "tool_choice": "none",
        },
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": TOOLS,
            "tool_choice": "required",
        },
    ],
    ids=["content-parts", "tools", "tool-choice-none", "tool-calls"],
)
def test_chat_bodies_tokenize_as_the_replica_tokenizes_them(
    model_dir: Path, template: str, body: dict[str, Any]
) -> None:
    tokenizer = load_tokenizer(str(model_dir))
    if template == "tools-aware":
        tokenizer = Tokenizer(
            tokenizer.inner, chat_template=TOOLS_TEMPLATE, bos_token=tokenizer.bos_token
        )
    gateway = PromptTokenizer(tokenizer, "test").token_ids({"model": "tiny", **body})
    assert gateway == _replica_ids(tokenizer, body)


def test_a_body_the_gateway_cannot_render_falls_back_to_text(model_dir: Path) -> None:
    dep = deployment(str(model_dir))
    image = {"type": "image_url", "image_url": {"url": "http://x"}}
    body = {"model": "tiny", "messages": [{"role": "user", "content": [image]}]}
    assert view(dep, "/v1/chat/completions", body).prefix_hashing == "text"
    assert view(dep, "/v1/chat/completions", CHAT).prefix_hashing == "token"


def test_token_prompts_estimate_exact_counts(model_dir: Path) -> None:
    got = view(deployment(str(model_dir)), "/v1/completions", {"model": "tiny", "prompt": TEXT})
    assert got.prompt_tokens_estimate == len(load_tokenizer(str(model_dir)).encode(TEXT))


def test_without_a_readable_tokenizer_text_is_approximated_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dep = deployment("no-such-model")
    with caplog.at_level(logging.WARNING, logger="shipit.gateway"):
        tokenizers = load_prompt_tokenizers([dep])
    assert tokenizers == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no-such-model" in warnings[0] and "tokenizer" in warnings[0]
    got = view(dep, "/v1/completions", {"model": "tiny", "prompt": TEXT})
    assert got.prefix_hashing == "text" and got.prefix_hashes
    ids = view(dep, "/v1/completions", {"model": "tiny", "prompt": list(range(40))})
    assert ids.prefix_hashing == "token" and len(ids.prefix_hashes) == 2


def test_tokenizer_none_never_loads_and_other_policies_load_nothing(model_dir: Path) -> None:
    assert load_prompt_tokenizers([deployment(str(model_dir), tokenizer="none")]) == {}
    cfg = parse_config({"deployments": [{"name": "d", "model": str(model_dir)}]})
    assert load_prompt_tokenizers(cfg.deployments) == {}  # least_outstanding reads no prefix
    assert set(load_prompt_tokenizers([deployment(str(model_dir))])) == {"d"}


def test_an_explicit_tokenizer_path_is_used_for_any_model(model_dir: Path) -> None:
    dep = deployment("served-elsewhere", tokenizer=str(model_dir))
    got = view(dep, "/v1/completions", {"model": "tiny", "prompt": TEXT})
    assert got.prefix_hashing == "token"


def test_simulated_deployments_hash_with_the_simulated_tokenizer() -> None:
    sim = {"name": "d", "simulate": "H100:llama-3.1-8b", "routing": {"policy": "prefix_cache"}}
    cfg = parse_config({"deployments": [sim]})
    assert load_prompt_tokenizers(cfg.deployments)["d"].source.startswith("simulated")


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "tokenizer is ''"), ("   ", "tokenizer is '   '"), (True, "tokenizer is True")],
)
def test_bad_tokenizer_settings_are_config_errors(value: object, message: str) -> None:
    routing = {"policy": "prefix_cache", "prefix_cache": {"tokenizer": value}}
    with pytest.raises(ConfigError, match=message) as err:
        parse_config({"deployments": [{"routing": routing}]})
    assert "routing.prefix_cache.tokenizer" in str(err.value)
    assert "auto" in str(err.value) and "none" in str(err.value)


def test_auto_and_none_are_case_insensitive() -> None:
    assert deployment("m", tokenizer=" AUTO ").routing.prefix_cache.tokenizer == "auto"
    assert deployment("m", tokenizer="None").routing.prefix_cache.tokenizer == "none"


def test_an_explicit_path_that_cannot_be_read_stops_the_gateway(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere") as err:
        load_prompt_tokenizers([deployment("m", tokenizer=str(missing))])
    assert err.value.field == "routing.prefix_cache.tokenizer"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"tokenizer\.json"):
        load_prompt_tokenizers([deployment("m", tokenizer=str(tmp_path / "empty"))])


def test_long_prompts_are_tokenized_off_the_event_loop(model_dir: Path) -> None:
    """A long prompt's tokenizing runs in a worker thread (the loop keeps relaying other
    streams meanwhile); a short one stays on the loop (a thread hop would cost more); both
    hash the same as the synchronous parse."""
    dep = deployment(str(model_dir))
    tokenizers = load_prompt_tokenizers([dep])
    seen: list[int] = []
    tok = tokenizers["d"]
    inner = tok.tokenizer.encode

    def encode(text: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(threading.get_ident())
        return inner(text, *args, **kwargs)

    object.__setattr__(tok.tokenizer, "encode", encode)

    async def parse(prompt: str) -> tuple[RequestView, int]:
        body = json.dumps({"model": "tiny", "prompt": prompt}).encode()
        got = await parse_request_async(
            request_id="q", path="/v1/completions", headers={}, body=body,
            deployments={"d": dep}, adapters={}, now_s=0.0, tokenizers=tokenizers,
        )  # fmt: skip
        return got, threading.get_ident()

    long_prompt = TEXT * (OFF_LOOP_BYTES // len(TEXT) + 1)
    long_view, loop_thread = asyncio.run(parse(long_prompt))
    assert len(seen) == 1 and seen[0] != loop_thread
    short_view, loop_thread = asyncio.run(parse(TEXT))
    assert len(seen) == 2 and seen[1] == loop_thread
    assert long_view.prefix_hashing == short_view.prefix_hashing == "token"
    sync = view(dep, "/v1/completions", {"model": "tiny", "prompt": long_prompt})
    assert long_view.prefix_hashes == sync.prefix_hashes
