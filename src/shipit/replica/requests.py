"""Parsed request bodies turned into what the engine runs: one ``ChoiceSpec`` per choice.

Owns the meaning of the OpenAI parameters at the replica: ``n`` choices per prompt and a list
of prompts in ``/v1/completions`` (choice ``index = prompt_index * n + j``, each its own engine
request; with a ``seed``, choice ``j`` of every prompt uses ``seed + j``, so choice 0 matches the
same request with ``n=1``), ``echo``, penalties and ``logit_bias`` (keys are token ids), the
context-length check with OpenAI's message, ``response_format`` and ``tool_choice`` turned into
constraints, and tools rendered into the prompt (``replica.tools``). Refuses what the replica
does not do (``best_of`` other than ``n``, ``suffix``, image parts). It must not touch HTTP or the
engine's state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from shipit.core.errors import ContextLengthError, InvalidRequestError
from shipit.engine.chat_prompt import render_chat
from shipit.engine.sampling import SamplingParams
from shipit.engine.structured import Constraint
from shipit.engine.tokenizer import Tokenizer
from shipit.replica import protocol

DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_TOP_LOGPROBS_COMPLETIONS = 5  # OpenAI's limit for the legacy logprobs parameter
MAX_TOP_LOGPROBS_CHAT = 20
MAX_CHOICES = 64  # n times the number of prompts, per request


@dataclass(frozen=True, slots=True)
class ChoiceSpec:
    """One engine request: choice ``index`` for prompt ``prompt_index``."""

    index: int
    prompt_index: int
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    echo: str = ""  # text put before the completion (``echo``)


@dataclass(frozen=True, slots=True)
class ToolMode:
    """How a chat response treats tool calls: which functions the parser accepts."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything the engine and the response writer need, in their own types."""

    kind: Literal["completion", "chat"]
    model: str
    choices: tuple[ChoiceSpec, ...]
    stream: bool
    include_usage: bool
    priority: int
    cache_salt: str | None
    tools: ToolMode | None = None

    @property
    def prompt_token_ids(self) -> list[int]:
        return list(self.choices[0].prompt_token_ids)

    @property
    def params(self) -> SamplingParams:
        return self.choices[0].params

    @property
    def constraint(self) -> Constraint | None:
        return self.choices[0].params.constraint


def _logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    out = []
    for key, value in (raw or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise InvalidRequestError(
                f"logit_bias keys are token ids (integers as strings); got {key!r}",
                field="logit_bias",
            ) from None
        out.append((token_id, value))
    return tuple(out)


def _sampling(
    body: protocol._SamplingBody,
    max_tokens: int,
    logprobs: int | None,
    constraint: Constraint | None = None,
) -> SamplingParams:
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
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=_logit_bias(body.logit_bias),
        constraint=constraint,
    )


def _max_tokens(
    requested: int | None, default: int, prompt_len: int, max_model_len: int, field: str
) -> int:
    if prompt_len >= max_model_len:
        raise ContextLengthError(prompt_tokens=prompt_len, max_model_len=max_model_len, field=field)
    if requested is None:
        return max(1, min(default, max_model_len - prompt_len))
    if requested >= 1 and prompt_len + requested > max_model_len:
        raise ContextLengthError(
            prompt_tokens=prompt_len, max_model_len=max_model_len, max_tokens=requested, field=field
        )
    return requested  # < 1 is refused by SamplingParams, naming max_tokens


def _n(body: protocol._SamplingBody, prompts: int) -> int:
    n = 1 if body.n is None else body.n
    if n < 1 or n * prompts > MAX_CHOICES:
        raise InvalidRequestError(
            f"n must be between 1 and {MAX_CHOICES // prompts} here ({MAX_CHOICES} choices per "
            f"request across {prompts} prompt(s)); got {n}",
            field="n",
        )
    return n


def _choices(
    prompts: list[tuple[list[int], str]], n: int, params: list[SamplingParams]
) -> tuple[ChoiceSpec, ...]:
    out = []
    for p, (ids, echo) in enumerate(prompts):
        for j in range(n):
            seed = params[p].seed
            choice_params = (
                params[p] if seed is None or j == 0 else replace(params[p], seed=seed + j)
            )
            out.append(ChoiceSpec(p * n + j, p, tuple(ids), choice_params, echo))
    return tuple(out)


# ----- /v1/completions ----------------------------------------------------------------------
def _completion_prompts(body: protocol.CompletionBody, tokenizer: Tokenizer) -> list[list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise InvalidRequestError("prompt is empty; send at least one prompt", field="prompt")
    out = [tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    if any(not ids for ids in out):
        raise InvalidRequestError("prompt is empty; send at least one token", field="prompt")
    vocab = tokenizer.vocab_size
    for p, ids in zip(prompts, out, strict=True):
        if isinstance(p, str):
            continue
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:  # before anything decodes it (echo)
            raise InvalidRequestError(
                f"prompt: token id {bad[0]} is outside the vocabulary [0, {vocab})",
                field="prompt",
            )
    return out


def _refuse_completion_extras(body: protocol.CompletionBody, n: int) -> None:
    if body.best_of not in (None, 1, n):
        raise InvalidRequestError(
            f"best_of={body.best_of} is not supported by this replica; omit it or send n",
            field="best_of",
            code="unsupported_value",
        )
    if body.suffix is not None:
        raise InvalidRequestError(
            "suffix is not supported by this replica; omit it",
            field="suffix",
            code="unsupported_value",
        )
    if body.logprobs is not None and not 0 <= body.logprobs <= MAX_TOP_LOGPROBS_COMPLETIONS:
        raise InvalidRequestError(
            f"logprobs must be between 0 and {MAX_TOP_LOGPROBS_COMPLETIONS}; got {body.logprobs}",
            field="logprobs",
        )
    if body.echo and body.logprobs is not None:
        raise InvalidRequestError(
            "echo with logprobs would need the prompt's log-probabilities, which this replica "
            "does not compute; drop one of them",
            field="echo",
            code="unsupported_value",
        )


def completion_request(
    body: protocol.CompletionBody, tokenizer: Tokenizer, max_model_len: int
) -> GenerationRequest:
    prompts = _completion_prompts(body, tokenizer)
    n = _n(body, len(prompts))
    _refuse_completion_extras(body, n)
    params = []
    echoes = []
    for ids in prompts:
        limit = _max_tokens(
            body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, len(ids), max_model_len, "prompt"
        )
        params.append(_sampling(body, limit, body.logprobs))
        echoes.append(tokenizer.decode(ids) if body.echo else "")
    choices = _choices(list(zip(prompts, echoes, strict=True)), n, params)
    return _request("completion", body, choices)


# ----- /v1/chat/completions -----------------------------------------------------------------
def _text(content: protocol.Content | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"{where}: content part of type {part.get('type')!r} is not supported; "
                "send text parts only",
                field="messages",
                code="unsupported_value",
            )
        parts.append(part["text"])
    return "".join(parts)


def chat_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Parsed messages as the dicts templates and ``replica.tools`` read."""
    if not messages:
        raise InvalidRequestError("messages must hold at least one message", field="messages")
    out = []
    for i, m in enumerate(messages):
        d: dict[str, Any] = {"role": m.role, "content": _text(m.content, f"messages[{i}]")}
        if isinstance(m, protocol.AssistantMessage):
            if m.content is None and not m.tool_calls:
                raise InvalidRequestError(
                    f"messages[{i}]: an assistant message needs content or tool_calls",
                    field="messages",
                    code="missing_required_parameter",
                )
            if m.tool_calls:
                d["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if isinstance(m, protocol.ToolMessage):
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def _tool_setup(
    body: protocol.ChatBody,
) -> tuple[list[dict[str, Any]] | None, ToolMode | None, Constraint | None]:
    """(tools for the prompt, how to parse the output, the constraint tool_choice imposes)."""
    tools = body.tools or []
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if not tools:
        if choice != "none":
            raise InvalidRequestError(
                "tool_choice is only allowed when tools are specified", field="tool_choice"
            )
        return None, None, None
    if choice == "none":
        return None, None, None
    by_name = {t.function.name: t.function for t in tools}
    listed = [t.model_dump(exclude_none=True) for t in tools]
    mode = ToolMode(tuple(by_name))
    if choice == "auto":
        return listed, mode, None
    if isinstance(choice, protocol.NamedToolChoice):
        fn = by_name.get(choice.function.name)
        if fn is None:
            raise InvalidRequestError(
                f"tool_choice names function {choice.function.name!r}, which is not in tools "
                f"({', '.join(by_name)})",
                field="tool_choice",
            )
        return listed, mode, Constraint.tool_call([(fn.name, fn.parameters)])
    return listed, mode, Constraint.tool_call([(f.name, f.parameters) for f in by_name.values()])


def _format_constraint(body: protocol.ChatBody) -> Constraint | None:
    fmt = body.response_format
    if isinstance(fmt, protocol.JsonObjectFormat):
        return Constraint.json_object()
    if isinstance(fmt, protocol.JsonSchemaFormat):
        schema = fmt.json_schema.json_schema
        return Constraint.json_schema(schema) if schema else Constraint.json_object()
    return None


def chat_request(
    body: protocol.ChatBody, tokenizer: Tokenizer, max_model_len: int
) -> GenerationRequest:
    messages = chat_messages(body.messages)
    tools, mode, tool_constraint = _tool_setup(body)
    fmt_constraint = _format_constraint(body)
    if tool_constraint is not None and fmt_constraint is not None:
        raise InvalidRequestError(
            "response_format cannot be combined with a required or named tool_choice: the "
            "output must be a tool call; drop one of them",
            field="response_format",
        )
    ids = tokenizer.encode(render_chat(tokenizer, messages, tools))
    requested = body.max_completion_tokens
    requested = body.max_tokens if requested is None else requested
    max_tokens = _max_tokens(requested, max_model_len, len(ids), max_model_len, "messages")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs=true", field="top_logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_TOP_LOGPROBS_CHAT:
        raise InvalidRequestError(
            f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS_CHAT}; got {body.top_logprobs}",
            field="top_logprobs",
        )
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = _sampling(body, max_tokens, logprobs, tool_constraint or fmt_constraint)
    choices = _choices([(ids, "")], _n(body, 1), [params])
    return _request("chat", body, choices, mode)


def _request(
    kind: Literal["completion", "chat"],
    body: protocol._SamplingBody,
    choices: tuple[ChoiceSpec, ...],
    tools: ToolMode | None = None,
) -> GenerationRequest:
    options = body.stream_options
    if options is not None and not body.stream:
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", field="stream_options"
        )
    return GenerationRequest(
        kind=kind,
        model=body.model,
        choices=choices,
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        priority=body.priority,
        cache_salt=body.cache_salt,
        tools=tools,
    )
