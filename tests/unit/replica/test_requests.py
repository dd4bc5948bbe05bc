"""Parsed bodies into engine requests: choices per prompt and per ``n`` with their seeds, echo,
penalties and bias, response formats and tool choices as constraints, and OpenAI's refusals."""

from __future__ import annotations

import json

import pytest

from shipit.core import openai_errors as oe
from shipit.core.errors import ContextLengthError, InvalidRequestError
from shipit.engine.simulated import SimTokenizer
from shipit.engine.structured import Constraint
from shipit.replica import protocol, requests

TOK = SimTokenizer()
USER = [{"role": "user", "content": "hi there"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]


def completion(**body: object) -> requests.GenerationRequest:
    raw = json.dumps({"model": "m", "prompt": "a b c", **body}).encode()
    return requests.completion_request(protocol.parse_body(raw, protocol.CompletionBody), TOK, 64)


def chat(**body: object) -> requests.GenerationRequest:
    raw = json.dumps({"model": "m", "messages": USER, **body}).encode()
    return requests.chat_request(protocol.parse_body(raw, protocol.ChatBody), TOK, 512)


def refusal(fn: object, **body: object) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as err:
        fn(**body)  # type: ignore[operator]
    return err.value


def test_prompt_lists_and_n_give_one_choice_each_in_openai_order() -> None:
    req = completion(prompt=["a", "b c"], n=2, seed=7)
    assert [(c.index, c.prompt_index) for c in req.choices] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert [c.prompt_token_ids for c in req.choices][1:3] == [
        tuple(TOK.encode("a")),
        tuple(TOK.encode("b c")),
    ]
    # Choice j of every prompt uses seed + j: choice 0 is the n=1 request.
    assert [c.params.seed for c in req.choices] == [7, 8, 7, 8]
    assert [c.params.seed for c in completion(n=3).choices] == [None, None, None]
    token_lists = completion(prompt=[[5, 6], [7]]).choices
    assert [c.prompt_token_ids for c in token_lists] == [(5, 6), (7,)]


def test_echo_penalties_and_bias_reach_the_choice() -> None:
    req = completion(echo=True, presence_penalty=0.5, frequency_penalty=-1, logit_bias={"9": -5})
    c = req.choices[0]
    assert c.echo == TOK.decode(TOK.encode("a b c"))
    assert (c.params.presence_penalty, c.params.frequency_penalty) == (0.5, -1.0)
    assert c.params.logit_bias == ((9, -5.0),)
    assert completion().choices[0].echo == ""


def test_chat_n_and_best_of_equal_to_n() -> None:
    assert len(chat(n=3).choices) == 3
    assert len(completion(n=2, best_of=2).choices) == 2


def test_response_formats_become_constraints() -> None:
    assert chat().constraint is None
    assert chat(response_format={"type": "text"}).constraint is None
    assert chat(response_format={"type": "json_object"}).constraint == Constraint.json_object()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert chat(response_format=fmt).constraint == Constraint.json_schema(schema)
    no_schema = {"type": "json_schema", "json_schema": {"name": "x"}}
    assert chat(response_format=no_schema).constraint == Constraint.json_object()


def test_tool_choices() -> None:
    auto = chat(tools=TOOLS)
    assert auto.tools is not None and auto.tools.names == ("get_weather", "get_time")
    assert auto.constraint is None
    assert len(auto.prompt_token_ids) > len(chat().prompt_token_ids) + 30  # tools in the prompt
    none = chat(tools=TOOLS, tool_choice="none")
    assert none.tools is None and len(none.prompt_token_ids) < len(auto.prompt_token_ids)
    required = chat(tools=TOOLS, tool_choice="required")
    assert required.constraint == Constraint.tool_call(
        [("get_weather", {"type": "object"}), ("get_time", None)]
    )
    named = chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.constraint == Constraint.tool_call([("get_time", None)])


def test_tool_conversations_are_accepted() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
        {"role": "developer", "content": "be brief"},
    ]
    assert chat(messages=messages, tools=TOOLS).choices


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages", "invalid_value"),
        ({"messages": [{"role": "user", "content": None}]}, "messages", "invalid_type"),
        ({"messages": [{"role": "user"}]}, "messages", "missing_required_parameter"),
        ({"messages": [{"role": "assistant"}]}, "messages", "missing_required_parameter"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages",
            "missing_required_parameter",
        ),
        ({"messages": []}, "messages", "invalid_value"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"max_tokens": "5"}, "max_tokens", "invalid_type"),
        ({"n": 65}, "n", "invalid_value"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "invalid_value",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "invalid_value",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format", "invalid_value"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools", "invalid_value"),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"functions": []}, "functions", "unknown_parameter"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages",
            "unsupported_value",
        ),
    ],
)
def test_chat_refusals(body: dict[str, object], param: str, code: str) -> None:
    err = refusal(chat, **body)
    assert (err.field, oe.kind_of(err).code) == (param, code)


def test_accepted_and_ignored_openai_fields() -> None:
    req = chat(
        user="u",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=True,
        modalities=["text"],
        presence_penalty=None,
    )
    assert req.params.presence_penalty == 0.0


def test_the_context_length_message_has_the_limit_the_total_and_its_parts() -> None:
    with pytest.raises(ContextLengthError) as err:
        chat(max_tokens=510)
    prompt = err.value.prompt_tokens
    assert err.value.message == (
        f"This model's maximum context length is 512 tokens; your request has {prompt + 510} "
        f"tokens ({prompt} in the messages, 510 for the completion). Shorten the messages or "
        "lower max_tokens."
    )
    assert err.value.field == "messages"


@pytest.mark.parametrize("echo", [True, False])
def test_a_token_prompt_outside_the_vocabulary_is_a_400_not_a_500(echo: bool) -> None:
    err = refusal(completion, prompt=[1, TOK.vocab_size], echo=echo)
    assert err.field == "prompt"
    assert f"token id {TOK.vocab_size} is outside the vocabulary" in err.message
    err = refusal(completion, prompt=[[3], [-1]], echo=echo)
    assert "token id -1" in err.message
