"""Edge validation: the few body fields the gateway reads, checked as strictly as a replica does.

Owns the JSON object check and the types of what the gateway reads or routes on (``model``,
``stream``, ``stream_options``, ``messages`` and each message's ``role`` and ``content``,
``prompt``, ``priority``, ``max_tokens``, ``max_completion_tokens``, ``user``), raising
``InvalidRequestError`` with the vocabulary's code (``invalid_json``, ``invalid_type``,
``invalid_value``, ``missing_required_parameter``) and the parameter, worded as the replica
words them. Everything else (sampling parameters, tools, response formats, unknown
parameters) is the replica's to check: the body is forwarded unchanged. Pure; no IO.
"""

from __future__ import annotations

import json
from typing import Any

from shipit.core.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
INFERENCE_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH})  # the generation endpoints


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )


def _wrong_type(where: str, value: Any, expected: str) -> InvalidRequestError:
    shown = json.dumps(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InvalidRequestError(
        f"Invalid type for '{where}': expected {expected}, but got {_type_name(value)} {shown}",
        field=where.split(".", 1)[0].split("[", 1)[0],
        code="invalid_type",
    )


def _missing(where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Missing required parameter: '{where}'",
        field=where.split(".", 1)[0].split("[", 1)[0],
        code="missing_required_parameter",
    )


def load_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else (nesting too deep to parse included) is a 400
    ``invalid_json``."""
    try:
        data = json.loads(raw)
    except RecursionError:  # paths the edge does not parse first (/tokenize, /detokenize)
        raise InvalidRequestError(
            "the request body is JSON nested too deeply to parse; send a flatter body",
            field="body",
            code="invalid_json",
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc}", field="body", code="invalid_json"
        ) from None
    return as_object(data)


def as_object(data: Any) -> dict[str, Any]:
    """A parsed body that must be a JSON object (400 ``invalid_json`` otherwise)."""
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f"the request body must be a JSON object, got {_type_name(data)}",
            field="body",
            code="invalid_json",
        )
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def model_of(data: dict[str, Any], *, required: bool) -> str | None:
    """``model``: a non-empty string (optional for ``/tokenize`` and ``/detokenize``)."""
    if "model" not in data or (data["model"] is None and not required):
        if required:
            raise _missing("model")
        return None
    model = data["model"]
    if not isinstance(model, str):
        raise _wrong_type("model", model, "a string")
    if not model:
        raise InvalidRequestError(
            "Invalid value for 'model': an empty string; name a model from GET /v1/models",
            field="model",
            code="invalid_value",
        )
    return model


def check_generation(path: str, data: dict[str, Any]) -> None:
    """What the gateway reads of a completion or chat body has the type OpenAI gives it."""
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _wrong_type("stream", stream, "a boolean")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _wrong_type("stream_options", options, "an object")
    for name in ("priority", "max_tokens", "max_completion_tokens"):
        value = data.get(name)
        if value is not None and not _is_int(value):
            raise _wrong_type(name, value, "an integer")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _wrong_type("user", user, "a string")
    if path == CHAT_PATH:
        check_messages(data)
    elif path == COMPLETIONS_PATH:
        check_prompt(data)


def check_messages(data: dict[str, Any]) -> None:
    """``messages``: a list of objects, each with a known ``role`` and its ``content`` (a
    string or a list of content parts; ``null`` only for an assistant message)."""
    if "messages" not in data:
        raise _missing("messages")
    messages = data["messages"]
    if not isinstance(messages, list):
        raise _wrong_type("messages", messages, "an array of message objects")
    for i, m in enumerate(messages):  # per message of every chat request: no string built
        if not isinstance(m, dict):
            raise _wrong_type(f"messages[{i}]", m, "a message object")
        role = m.get("role", _ABSENT)
        if role.__class__ is not str or role not in ROLES:
            _bad_role(i, role)
        content = m.get("content", _ABSENT)
        if content.__class__ is str:
            continue
        if content is _ABSENT:
            if role != "assistant":
                raise _missing(f"messages[{i}].content")
            continue
        if content is None and role == "assistant":
            continue
        if not isinstance(content, str | list):
            raise _wrong_type(f"messages[{i}].content", content, "a string or an array of parts")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise _wrong_type(f"messages[{i}].content[{j}]", part, "a content part object")


_ABSENT = object()


def _bad_role(i: int, role: object) -> None:
    """The error for message ``i``'s ``role``: missing, not a string, or not a role."""
    where = f"messages[{i}]"
    if role is _ABSENT:
        raise _missing(f"{where}.role")
    if not isinstance(role, str):
        raise _wrong_type(f"{where}.role", role, "a string")
    if role not in ROLES:
        raise InvalidRequestError(
            f"Invalid value for '{where}.role': {role!r}; use one of {', '.join(ROLES)}",
            field="messages",
            code="invalid_value",
        )


def check_prompt(data: dict[str, Any]) -> None:
    """``prompt``: a string, a list of strings, a list of token ids or a list of such lists."""
    if "prompt" not in data:
        raise _missing("prompt")
    prompt = data["prompt"]
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and (
        all(isinstance(p, str) for p in prompt)
        or all(_is_int(p) for p in prompt)
        or all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt)
    ):
        return
    raise _wrong_type(
        "prompt",
        prompt,
        "a string, an array of strings, an array of token ids or an array of such arrays",
    )
