"""Parsing a request once at the edge: what routing reads is computed only when the policy the
request runs (a preset or a custom composition) reads it."""

from __future__ import annotations

import json

import pytest

from shipit.config.gateway import parse_config
from shipit.gateway.parse import parse_request

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hello " * 200}]}
).encode()


def _view(routing: dict[str, object], headers: dict[str, str] | None = None) -> tuple[int, ...]:
    cfg = parse_config({"deployments": [{"name": "d", "model": "m", "routing": routing}]})
    deployments = {d.name: d for d in cfg.deployments}
    view = parse_request(
        request_id="q", path="/v1/chat/completions", headers=headers or {}, body=BODY,
        deployments=deployments, adapters={}, now_s=0.0,
    )  # fmt: skip
    return view.prefix_hashes


@pytest.mark.parametrize(
    ("routing", "hashed"),
    [
        ({"policy": "least_outstanding"}, False),
        ({"policy": "prefix_cache"}, True),
        ({"policy": "custom", "scorers": [{"name": "load", "weight": 1.0}]}, False),
        (
            {
                "policy": "custom",
                "scorers": [{"name": "prefix_cache", "weight": 2.0}, {"name": "load"}],
            },
            True,
        ),
    ],
)
def test_prompts_are_hashed_only_for_policies_that_read_prefixes(
    routing: dict[str, object], hashed: bool
) -> None:
    assert bool(_view(routing)) is hashed


def test_a_routing_override_to_prefix_cache_hashes_the_prompt() -> None:
    assert _view({"policy": "round_robin"}, {"x-shipit-routing": "prefix_cache"})


def test_the_prompt_estimate_uses_the_characters_a_token_of_the_prefix_hashing() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "abcd " * 160}]})
    for chars, tokens in ((4.0, 200), (5.0, 160)):
        routing = {"policy": "prefix_cache", "prefix_cache": {"chars_per_token": chars}}
        cfg = parse_config({"deployments": [{"name": "d", "model": "m", "routing": routing}]})
        view = parse_request(
            request_id="q", path="/v1/chat/completions", headers={}, body=body.encode(),
            deployments={d.name: d for d in cfg.deployments}, adapters={}, now_s=0.0,
        )  # fmt: skip
        # 800 characters of content (the flattened prompt may add a few): 800 / chars.
        assert tokens <= view.prompt_tokens_estimate <= tokens + 5
        assert len(view.prefix_hashes) == view.prompt_tokens_estimate // 16
