"""CPU per request of prefix hashing at the gateway: token-exact (tokenize, then hash token blocks)
vs the character approximation, for a text completion and a chat request of about 2k tokens.

Times ``gateway.parse.parse_request`` (JSON body already parsed at the edge, as the gateway does)
for one deployment routed by ``prefix_cache`` with ``tokenizer: auto`` (the default model's
tokenizer) and with ``tokenizer: none``, in CPU time of this process (``time.process_time``, so
other processes on a shared machine count less), best and median of ``--repeats`` runs of
``--requests`` requests each. Prints microseconds per request.

    uv run python benchmarks/prefix_tokenize.py [--requests 300] [--repeats 5]
        [--json benchmarks/results/prefix_tokenize.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from shipit.config.gateway import DeploymentConfig, parse_config
from shipit.gateway.parse import parse_request
from shipit.gateway.prompt_tokens import PromptTokenizer, load_prompt_tokenizers

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "be",
    "are",
    "was",
    "it",
    "or",
    "an",
    "which",
    "model",
    "request",
    "cache",
    "prefix",
    "token",
    "replica",
    "gateway",
    "route",
    "block",
    "system",
    "user",
    "assistant",
    "answer",
    "data",
    "server",
    "latency",
    "throughput",
    "memory",
    "compute",
    "question",
    "example",
    "result",
    "value",
    "table",
    "number",
    "time",
]


def prose(words: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out = []
    for i in range(words):
        word = rng.choice(WORDS)
        out.append(word.capitalize() if i % 12 == 0 else word)
        if i % 12 == 11:
            out[-1] += "."
    return " ".join(out)


def bodies(text: str) -> dict[str, tuple[str, dict[str, Any]]]:
    chat = {
        "model": "smollm2-135m-instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
    }
    completion = {"model": "smollm2-135m-instruct", "prompt": text}
    return {
        "chat": ("/v1/chat/completions", chat),
        "completion": ("/v1/completions", completion),
    }


def deployment(tokenizer: str) -> DeploymentConfig:
    routing = {"policy": "prefix_cache", "prefix_cache": {"tokenizer": tokenizer}}
    return parse_config({"deployments": [{"name": "d", "routing": routing}]}).deployments[0]


def per_request_us(
    dep: DeploymentConfig,
    tokenizers: dict[str, PromptTokenizer],
    path: str,
    body: dict[str, Any],
    n: int,
) -> float:
    raw = json.dumps(body).encode()
    deployments = {"d": dep}
    start = time.process_time()
    for i in range(n):
        data = json.loads(raw)  # what the edge hands over (a fresh object per request)
        parse_request(
            request_id=str(i), path=path, headers={}, body=raw, data=data,
            deployments=deployments, adapters={}, now_s=0.0, tokenizers=tokenizers,
        )  # fmt: skip
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    token_dep, text_dep = deployment("auto"), deployment("none")
    loaded = load_prompt_tokenizers([token_dep])
    assert loaded, "the default model's tokenizer did not load"
    text = prose(1850)  # about 2,000 tokens with the default model
    results: dict[str, Any] = {}
    for kind, (path, body) in bodies(text).items():
        ids = loaded["d"].token_ids(body)
        assert ids is not None
        row: dict[str, Any] = {"prompt_tokens": len(ids), "prompt_chars": len(text)}
        for mode, dep, toks in (("token", token_dep, loaded), ("text", text_dep, {})):
            runs = [
                per_request_us(dep, toks, path, body, args.requests) for _ in range(args.repeats)
            ]
            row[mode] = {"best_us": min(runs), "median_us": statistics.median(runs)}
        results[kind] = row
        print(
            f"{kind:10s} {row['prompt_tokens']} tokens: token-exact "
            f"{row['token']['best_us']:.0f} us (median {row['token']['median_us']:.0f}), "
            f"text approximation {row['text']['best_us']:.0f} us "
            f"(median {row['text']['median_us']:.0f}) per request"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
