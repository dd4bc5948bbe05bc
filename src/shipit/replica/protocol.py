"""OpenAI request bodies as the replica accepts them, parsed once with OpenAI's strictness.

Owns the accepted shape of ``/v1/completions``, ``/v1/chat/completions``, vLLM's
``/tokenize`` and ``/detokenize`` and its LoRA admin bodies: pydantic models with
``extra="forbid"`` (a misspelt parameter is a 400 naming it, ``unknown_parameter``) and
``strict=True`` (``"stream": "yes"`` or ``"max_tokens": "5"`` are 400s, ``invalid_type``, as at
OpenAI). Messages are told apart by ``role`` (``system``, ``developer``, ``user``, ``assistant``,
``tool``); anything else is a 400. Parameters OpenAI defines that change nothing here are
accepted and ignored (``user``, ``metadata``, ``store``...; docs/replica.md lists them). Turning
a body into engine types is ``replica.requests``'s job. It must not touch HTTP objects or the
engine.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipit.core import safe_json
from shipit.core.errors import InvalidRequestError

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _SamplingBody(_Body):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    priority: int = 0
    cache_salt: str | None = None
    # OpenAI parameters accepted and ignored: they change nothing a replica computes.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class CompletionBody(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


# ----- chat messages -------------------------------------------------------------------------
Content = str | list[dict[str, Any]]


class SystemMessage(_Body):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(_Body):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCallIn(_Body):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None


class ToolMessage(_Body):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


# ----- tools and response formats ------------------------------------------------------------
class FunctionDef(_Body):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_Body):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class ChatBody(_SamplingBody):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    modalities: list[Literal["text"]] | None = None


# ----- vLLM's tokenizer endpoints and LoRA admin ----------------------------------------------
class TokenizeCompletionBody(_Body):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatBody(_Body):
    model: str | None = None
    messages: list[ChatMessage]
    tools: list[ToolDef] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = False
    return_token_strs: bool = False


class DetokenizeBody(_Body):
    model: str | None = None
    tokens: list[int]


class LoadLoraBody(_Body):
    lora_name: str
    lora_path: str
    load_inplace: bool = False


class UnloadLoraBody(_Body):
    lora_name: str
    lora_int_id: int | None = None


# ----- parsing ----------------------------------------------------------------------------------
_TAGS = frozenset(
    ("system", "developer", "user", "assistant", "tool", "text", "json_object", "json_schema")
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_BRANCHES = frozenset(("str", "int", "float", "bool", "list", "dict", "none"))


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as OpenAI writes it (``messages[0].content``), without the union
    branch names pydantic adds (``user``, ``str``, ``list[...]``)."""
    out = ""
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i > 0 else None
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            _NAME.match(part)
            and part not in _TYPE_BRANCHES
            and not (part in _TAGS and (isinstance(prev, int) or prev == "response_format"))
        ):
            out += ("." if out else "") + part
    return out


def _code(error_type: str) -> str:
    if error_type == "extra_forbidden":
        return "unknown_parameter"
    if error_type == "missing":
        return "missing_required_parameter"
    if error_type.endswith(("_type", "_parsing")) or error_type == "model_attributes_type":
        return "invalid_type"
    return "invalid_value"


def parse_body(raw: bytes, model: type[_Body]) -> Any:
    """JSON bytes into a body model; errors name the offending parameter and its code."""
    return validate_body(safe_json.loads(raw), model)


def validate_body(data: Any, model: type[_Body]) -> Any:
    """Decoded JSON (``safe_json.loads``) into a body model, errors as ``parse_body``'s."""
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"])) or None
        param = str(first["loc"][0]) if first["loc"] else None
        code = _code(first["type"])
        if code == "unknown_parameter":
            message = f"Unrecognized request argument supplied: {where}"
        elif code == "missing_required_parameter":
            message = f"Missing required parameter: '{where}'"
        else:
            message = f"Invalid value for '{where}': {first['msg']}"
        raise InvalidRequestError(message, field=param, code=code) from exc
