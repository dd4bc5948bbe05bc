"""Request bodies become engine types once; every refusal names the parameter and its code."""

from __future__ import annotations

import json

import pytest

from shipit.core import openai_errors as oe
from shipit.core.errors import ContextLengthError, InvalidRequestError
from shipit.engine.simulated import SimTokenizer
from shipit.replica import protocol, requests

TOK = SimTokenizer()


def completion(max_model_len: int = 64, **body: object) -> requests.GenerationRequest:
    raw = json.dumps({"model": "m", "prompt": "a b c", **body}).encode()
    parsed = protocol.parse_body(raw, protocol.CompletionBody)
    return requests.completion_request(parsed, TOK, max_model_len)


def chat(max_model_len: int = 64, **body: object) -> requests.GenerationRequest:
    messages = [{"role": "user", "content": "hi there"}]
    raw = json.dumps({"model": "m", "messages": messages, **body}).encode()
    return requests.chat_request(protocol.parse_body(raw, protocol.ChatBody), TOK, max_model_len)


def test_completion_defaults_and_options() -> None:
    req = completion()
    assert req.kind == "completion" and req.prompt_token_ids == TOK.encode("a b c")
    assert req.params.max_tokens == 16 and req.params.temperature == 1.0
    assert not req.stream and not req.include_usage
    req = completion(
        stream=True,
        stream_options={"include_usage": True},
        stop="x",
        seed=3,
        logprobs=2,
        temperature=0,
        max_tokens=5,
        priority=-1,
        cache_salt="t1",
    )
    assert req.stream and req.include_usage and req.params.stop == ("x",)
    assert (req.params.seed, req.params.logprobs, req.params.max_tokens) == (3, 2, 5)
    assert req.params.greedy and req.priority == -1 and req.cache_salt == "t1"


def test_token_id_prompts_and_batches_of_one() -> None:
    assert completion(prompt=[5, 6, 7]).prompt_token_ids == [5, 6, 7]
    assert completion(prompt=[[5, 6]]).prompt_token_ids == [5, 6]
    assert completion(prompt=["a b"]).prompt_token_ids == TOK.encode("a b")


def test_chat_renders_the_template_and_defaults_max_tokens_to_the_rest_of_the_context() -> None:
    req = chat()
    assert req.prompt_token_ids == TOK.encode(
        TOK.apply_chat_template([{"role": "user", "content": "hi there"}])
    )
    assert req.params.max_tokens == 64 - len(req.prompt_token_ids)
    assert chat(max_completion_tokens=4).params.max_tokens == 4
    assert chat(logprobs=True, top_logprobs=3).params.logprobs == 3
    assert chat(logprobs=True).params.logprobs == 0
    assert chat().params.logprobs is None


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"temperatur": 0}, "temperatur", "unknown_parameter"),
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 65}, "n", "invalid_value"),
        ({"presence_penalty": 2.5}, "presence_penalty", "invalid_value"),
        ({"frequency_penalty": -3}, "frequency_penalty", "invalid_value"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "invalid_value"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "invalid_value"),
        ({"echo": True, "logprobs": 1}, "echo", "unsupported_value"),
        ({"best_of": 3}, "best_of", "unsupported_value"),
        ({"suffix": "x"}, "suffix", "unsupported_value"),
        ({"temperature": 5}, "temperature", "invalid_value"),
        ({"top_p": 0}, "top_p", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
        ({"max_tokens": "5"}, "max_tokens", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"seed": -1}, "seed", "invalid_value"),
        ({"logprobs": 9}, "logprobs", "invalid_value"),
        ({"stop": ["a"] * 9}, "stop", "invalid_value"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"prompt": []}, "prompt", "invalid_value"),
        ({"prompt": ""}, "prompt", "invalid_value"),
        ({"prompt": None}, "prompt", "invalid_type"),
    ],
)
def test_completion_refusals_name_the_parameter(
    body: dict[str, object], param: str, code: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        completion(**body)
    assert err.value.field == param
    assert oe.kind_of(err.value).code == code


def test_chat_refusals_name_the_parameter() -> None:
    with pytest.raises(InvalidRequestError) as err:
        chat(top_logprobs=2)
    assert err.value.field == "top_logprobs"
    raw = json.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        }
    ).encode()
    with pytest.raises(InvalidRequestError) as err:
        requests.chat_request(protocol.parse_body(raw, protocol.ChatBody), TOK, 64)
    assert err.value.field == "messages"


def test_context_length_errors_carry_both_lengths() -> None:
    with pytest.raises(ContextLengthError) as err:
        completion(prompt=list(range(3, 70)))
    assert (err.value.prompt_tokens, err.value.max_model_len) == (67, 64)
    with pytest.raises(ContextLengthError) as err:
        completion(prompt=[5] * 10, max_tokens=60)
    assert (err.value.prompt_tokens, err.value.max_tokens) == (10, 60)
    # Without max_tokens the default is clipped to what is left.
    assert completion(prompt=[5] * 60).params.max_tokens == 4


def test_bodies_that_are_not_json_objects() -> None:
    for raw in (b"{", b"[1]", b"\xff"):
        with pytest.raises(InvalidRequestError):
            protocol.parse_body(raw, protocol.CompletionBody)
    with pytest.raises(InvalidRequestError) as err:
        protocol.parse_body(b'{"prompt": "x"}', protocol.CompletionBody)
    assert err.value.field == "model"
