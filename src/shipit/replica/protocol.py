"""OpenAI request bodies, parsed once into the engine's types.

Owns the accepted shape of ``/v1/completions``, ``/v1/chat/completions`` and vLLM's LoRA admin
bodies (pydantic, ``extra="forbid"``, so a misspelt parameter is a 400 naming it), and the
turn from a body into a ``GenerationRequest``: prompt token ids, ``SamplingParams`` and
response options. Parameters OpenAI defines but this replica does not implement are accepted
only at their neutral value. It must not touch HTTP objects or the engine's state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from shipit.core.errors import ContextLengthError, InvalidRequestError
from shipit.engine.sampling import SamplingParams
from shipit.engine.tokenizer import Tokenizer

DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_TOP_LOGPROBS_COMPLETIONS = 5  # OpenAI's limit for the legacy logprobs parameter


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _SamplingBody(_Body):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    priority: int = 0
    cache_salt: str | None = None


class CompletionBody(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatMessage(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatBody(_SamplingBody):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


class LoadLoraBody(_Body):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoraBody(_Body):
    lora_name: str
    lora_int_id: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything the engine and the response writer need, in their own types."""

    kind: Literal["completion", "chat"]
    model: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    priority: int
    cache_salt: str | None


def parse_body(raw: bytes, model: type[_Body]) -> Any:
    """JSON bytes into a body model; errors name the offending parameter."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or None
        param = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "extra_forbidden":
            raise InvalidRequestError(
                f"unrecognized request argument supplied: {loc}", field=param
            ) from exc
        raise InvalidRequestError(f"{loc}: {first['msg']}", field=param) from exc


def _refuse_unsupported(body: _SamplingBody) -> None:
    checks: list[tuple[str, bool]] = [
        ("n", body.n != 1),
        ("presence_penalty", body.presence_penalty != 0.0),
        ("frequency_penalty", body.frequency_penalty != 0.0),
        ("logit_bias", bool(body.logit_bias)),
    ]
    if isinstance(body, CompletionBody):
        checks += [
            ("echo", body.echo),
            ("best_of", body.best_of not in (None, 1)),
            ("suffix", body.suffix is not None),
        ]
    for name, bad in checks:
        if bad:
            value = getattr(body, name)
            raise InvalidRequestError(
                f"{name}={value!r} is not supported by this replica; omit it or send its "
                "default (n=1, penalties 0, no logit_bias/echo/best_of/suffix)",
                field=name,
            )


def _sampling(body: _SamplingBody, max_tokens: int, logprobs: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=0 if body.top_k is None or body.top_k < 0 else body.top_k,
        stop=tuple([body.stop] if isinstance(body.stop, str) else body.stop or ()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        ignore_eos=body.ignore_eos,
        seed=body.seed,
        logprobs=logprobs,
    )


def _max_tokens(requested: int | None, default: int, prompt_len: int, max_model_len: int) -> int:
    if prompt_len >= max_model_len:
        raise ContextLengthError(prompt_tokens=prompt_len, max_model_len=max_model_len)
    if requested is None:
        return max(1, min(default, max_model_len - prompt_len))
    if requested >= 1 and prompt_len + requested > max_model_len:
        raise ContextLengthError(
            prompt_tokens=prompt_len, max_model_len=max_model_len, max_tokens=requested
        )
    return requested  # < 1 is refused by SamplingParams, naming max_tokens


def _completion_prompt(body: CompletionBody, tokenizer: Tokenizer) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if all(isinstance(t, int) for t in prompt):
        return [int(t) for t in prompt]  # type: ignore[arg-type]
    raise InvalidRequestError(
        "prompt: batched prompts are not supported; send one string or one list of token ids",
        field="prompt",
    )


def completion_request(
    body: CompletionBody, tokenizer: Tokenizer, max_model_len: int
) -> GenerationRequest:
    _refuse_unsupported(body)
    if body.logprobs is not None and not 0 <= body.logprobs <= MAX_TOP_LOGPROBS_COMPLETIONS:
        raise InvalidRequestError(
            f"logprobs must be between 0 and {MAX_TOP_LOGPROBS_COMPLETIONS}; got {body.logprobs}",
            field="logprobs",
        )
    ids = _completion_prompt(body, tokenizer)
    if not ids:
        raise InvalidRequestError("prompt is empty; send at least one token", field="prompt")
    max_tokens = _max_tokens(
        body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, len(ids), max_model_len
    )
    return _request("completion", body, ids, _sampling(body, max_tokens, body.logprobs))


def _message_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"messages: content part of type {part.get('type')!r} is not supported; "
                "send text parts only",
                field="messages",
            )
        parts.append(part["text"])
    return "".join(parts)


def chat_request(body: ChatBody, tokenizer: Tokenizer, max_model_len: int) -> GenerationRequest:
    _refuse_unsupported(body)
    if not body.messages:
        raise InvalidRequestError("messages must hold at least one message", field="messages")
    messages = [{"role": m.role, "content": _message_text(m)} for m in body.messages]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = tokenizer.encode(text)
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else None
    requested = body.max_tokens if requested is None else requested
    max_tokens = _max_tokens(requested, max_model_len, len(ids), max_model_len)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs=true", field="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return _request("chat", body, ids, _sampling(body, max_tokens, logprobs))


def _request(
    kind: Literal["completion", "chat"], body: _SamplingBody, ids: list[int], params: SamplingParams
) -> GenerationRequest:
    options = body.stream_options
    if options is not None and not body.stream:
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", field="stream_options"
        )
    return GenerationRequest(
        kind=kind,
        model=body.model,
        prompt_token_ids=ids,
        params=params,
        stream=body.stream,
        include_usage=bool(options and options.include_usage),
        priority=body.priority,
        cache_salt=body.cache_salt,
    )
