"""The official ``openai`` client against the real packaged model (smollm2-135m-instruct) served
by ``shipit up``, both through the gateway and directly against its replica: a weather-function
tool call answered in two turns, ``response_format`` json_schema output that validates for 20
varied prompts, ``n=3``, ``models.retrieve``, tokenize/detokenize and OpenAI-shaped refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from shipit.engine.loader import DEFAULT_MODEL
from support.up_process import launch

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class Replica:
    """Where the client talks to: the gateway of ``shipit up`` or its replica."""

    url: str

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``shipit up`` with one replica of the packaged model: (gateway URL, replica URL)."""
    root: Path = tmp_path_factory.mktemp("up")
    cfg = {
        "deployments": [
            {
                "name": "smol",
                "model": DEFAULT_MODEL,
                "replicas": 1,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
                # As many in flight as the replica batches (its --max-num-seqs), so the 20
                # concurrent prompts run as they do directly; and as long to wait as the
                # client does (a non-streamed answer's first byte comes when it is complete).
                "queueing": {"max_concurrency": 32, "queue_timeout_s": 600},
                "retries": {"first_byte_timeout_s": 600},
            }
        ]
    }
    proc, port, log = launch(root, cfg, ready_replicas=0)
    gateway = f"http://127.0.0.1:{port}"
    try:
        ready = httpx.get(f"{gateway}/shipit/ready?model={DEFAULT_MODEL}&wait_s=300", timeout=310)
        assert ready.status_code == 200, log.read_text()
        status = httpx.get(gateway + "/shipit/status").json()
        yield gateway, status["deployments"][0]["replicas"][0]["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module", params=["gateway", "replica"])
def replica(request: pytest.FixtureRequest, up: tuple[str, str]) -> Replica:
    gateway, replica_url = up
    return Replica(gateway if request.param == "gateway" else replica_url)


def test_models_retrieve(replica: Replica) -> None:
    model = replica.client().models.retrieve(DEFAULT_MODEL)
    assert model.id == DEFAULT_MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        replica.client().models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_weather_tool_call_answered_in_two_turns(replica: Replica) -> None:
    client = replica.client()
    messages: list[Any] = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    first = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        temperature=0,
        max_tokens=80,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert "paris" in args["city"].lower()

    weather = {"city": args["city"], "temperature": 18, "unit": args["unit"], "sky": "sunny"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(weather)},
    ]
    second = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
        temperature=0,
        max_tokens=40,
    )
    answer = second.choices[0]
    assert answer.message.tool_calls is None
    assert answer.finish_reason in ("stop", "length")
    assert answer.message.content and "18" in answer.message.content


def test_streamed_tool_call_deltas(replica: Replica) -> None:
    stream = replica.client().chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Weather in Tokyo, in celsius?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=80,
        stream=True,
    )
    calls, finish = [], None
    for chunk in stream:
        for c in chunk.choices:
            calls += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and len(calls) == 1
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "")["unit"] in ("celsius", "fahrenheit")


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "country", "is_capital"],
    "additionalProperties": False,
}
SENTIMENT = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}
LIST = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "minItems": 1,
            "maxItems": 3,
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
PROMPTS: list[tuple[str, dict[str, Any]]] = [
    ("Describe a fictional person named Alice who is 30.", PERSON),
    ("Invent a person: a retired teacher.", PERSON),
    ("Who wrote Hamlet? Give name and age at death.", PERSON),
    ("Make up a character for a children's book.", PERSON),
    ("Give me a person from history.", PERSON),
    ("What is the capital of France?", CITY),
    ("Tell me about Tokyo.", CITY),
    ("Name a big city in Brazil.", CITY),
    ("Which city hosts the Eiffel Tower?", CITY),
    ("Describe Berlin.", CITY),
    ("I love this product, it works great!", SENTIMENT),
    ("This was the worst day of my life.", SENTIMENT),
    ("The meeting is at 3pm.", SENTIMENT),
    ("What a fantastic concert!", SENTIMENT),
    ("The food was cold and the waiter was rude.", SENTIMENT),
    ("List some fruits.", LIST),
    ("Name three colors.", LIST),
    ("What should I pack for a beach trip?", LIST),
    ("List programming languages.", LIST),
    ("Give me ideas for a birthday party.", LIST),
]


def test_json_schema_output_validates_for_20_varied_prompts(replica: Replica) -> None:
    client = openai.AsyncOpenAI(base_url=replica.v1, api_key="unused", max_retries=0)

    async def one(prompt: str, schema: dict[str, Any]) -> tuple[str, str | None]:
        out = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": prompt}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
            temperature=0,
            max_tokens=64,
        )
        return out.choices[0].finish_reason, out.choices[0].message.content

    async def run_all() -> list[tuple[str, str | None]]:
        async with client:
            return await asyncio.gather(*(one(p, s) for p, s in PROMPTS))

    results = asyncio.run(run_all())
    for (prompt, schema), (finish, content) in zip(PROMPTS, results, strict=True):
        assert finish == "stop", (prompt, content)
        jsonschema.validate(json.loads(content or ""), schema)


def test_n3_gives_three_indexed_choices(replica: Replica) -> None:
    out = replica.client().chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Write a short greeting."}],
        n=3,
        seed=7,
        temperature=1.0,
        max_tokens=12,
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len({c.message.content for c in out.choices}) > 1
    # Prompt tokens count once; each choice's tokens count (at most 12 each, one at least).
    assert out.usage is not None and 3 <= out.usage.completion_tokens <= 36
    single = replica.client().chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Write a short greeting."}],
        max_tokens=1,
    )
    assert single.usage is not None and out.usage.prompt_tokens == single.usage.prompt_tokens


def replica_tokens(replica: Replica, text: str) -> list[int]:
    r = httpx.post(replica.url + "/tokenize", json={"prompt": text, "add_special_tokens": False})
    tokens: list[int] = r.json()["tokens"]
    return tokens


def test_tokenize_detokenize_round_trip(replica: Replica) -> None:
    text = "The capital of France is Paris."
    tokens = replica_tokens(replica, text)
    assert httpx.post(replica.url + "/detokenize", json={"tokens": tokens}).json() == {
        "prompt": text
    }


def test_openai_refusals_reach_the_client_as_bad_requests(replica: Replica) -> None:
    client = replica.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[misc,list-item]
        )
    assert err.value.code == "invalid_value"
    r = httpx.get(replica.v1 + "/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
