"""Response bodies and SSE chunks in OpenAI's shapes."""

from __future__ import annotations

import json

from shipit.core.errors import (
    CapacityError,
    ContextLengthError,
    InvalidRequestError,
    UnknownAdapterError,
)
from shipit.engine.engine import RequestOutput, TokenLogprob
from shipit.engine.simulated import SimTokenizer
from shipit.replica.errors import from_exception
from shipit.replica.openai_format import DONE, ResponseWriter

TOK = SimTokenizer()


def out(
    text: str, n: int, *, done: bool = False, lps: tuple[TokenLogprob, ...] = ()
) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        new_token_ids=(5,),
        new_text=text,
        finished=done,
        finish_reason="length" if done else None,
        num_prompt_tokens=4,
        num_output_tokens=n,
        num_cached_tokens=2,
        logprobs=lps,
    )


def events(data: bytes) -> list[object]:
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    return json.loads(data[6:-2])  # type: ignore[no-any-return]


def test_completion_stream_chunks_usage_and_done() -> None:
    w = ResponseWriter(
        request_id="cmpl-1", kind="completion", model="m", tokenizer=TOK, include_usage=True
    )
    first = events(w.chunk(out(" a", 1)))
    assert first == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": w.created,
        "model": "m",
        "choices": [{"index": 0, "text": " a", "logprobs": None, "finish_reason": None}],
        "usage": None,
    }
    assert w.chunk(out("", 2)) == b""  # nothing to say
    last = events(w.chunk(out(" b", 3, done=True)))
    assert last["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    usage = events(w.usage_chunk())
    assert usage["choices"] == [] and usage["usage"] == {  # type: ignore[index]
        "prompt_tokens": 4,
        "completion_tokens": 3,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    assert DONE == b"data: [DONE]\n\n"


def sse_events(data: bytes) -> list[dict[str, object]]:
    return [json.loads(e.removeprefix(b"data: ")) for e in data.split(b"\n\n") if e]


def test_chat_stream_opens_with_the_role_and_ends_with_an_empty_delta() -> None:
    w = ResponseWriter(request_id="c", kind="chat", model="m", tokenizer=TOK)
    role, end = sse_events(w.chunk(out("", 1, done=True)))
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # type: ignore[index]
    assert "usage" not in role
    assert end["choices"][0]["delta"] == {}  # type: ignore[index]
    assert end["choices"][0]["finish_reason"] == "length"  # type: ignore[index]


def test_whole_bodies_and_logprobs() -> None:
    lp = (TokenLogprob(5, -0.5, ((5, -0.5), (6, -1.0))),)
    w = ResponseWriter(request_id="c", kind="chat", model="m", tokenizer=TOK)
    w.add(out("x", 1, lps=lp))
    w.add(out("y", 2, done=True, lps=lp))
    body = w.body()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "xy", "refusal": None}
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 2 and content[0]["logprob"] == -0.5
    assert [t["logprob"] for t in content[0]["top_logprobs"]] == [-0.5, -1.0]
    c = ResponseWriter(request_id="c", kind="completion", model="m", tokenizer=TOK)
    c.add(out("x", 1, done=True, lps=lp))
    legacy = c.body()["choices"][0]["logprobs"]
    assert legacy["token_logprobs"] == [-0.5] and len(legacy["top_logprobs"][0]) == 2


def test_errors_map_to_status_and_param() -> None:
    cases = [
        (InvalidRequestError("bad", field="top_p"), 400, "top_p"),
        (ContextLengthError(prompt_tokens=9, max_model_len=8), 400, "prompt"),
        (UnknownAdapterError("no", field="model"), 404, "model"),
        (CapacityError("full", field="max_waiting"), 429, "max_waiting"),
        (CapacityError("too big", field="prompt"), 400, "prompt"),
    ]
    for exc, status, param in cases:
        response = from_exception(exc)
        assert response.status_code == status
        assert json.loads(bytes(response.body))["error"]["param"] == param
    ctx = json.loads(bytes(from_exception(cases[1][0]).body))["error"]
    assert ctx["code"] == "context_length_exceeded" and "9" in ctx["message"]
    assert from_exception(cases[3][0]).headers["retry-after"] == "1"
