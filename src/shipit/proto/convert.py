"""Between the gRPC messages of ``shipit.proto`` and OpenAI JSON bodies, both ways.

Field names are OpenAI's, so the conversion is field by field: ``to_body`` (a request message
as the OpenAI body, ``extra_json`` merged in, typed fields winning), ``to_request`` (an OpenAI
body as a request message: what fits a typed field goes there, the rest into ``extra_json``),
``to_message`` (a replica's JSON answer or stream chunk as a response message, unknown fields
dropped) and ``to_dict`` (a message as JSON-shaped data, integers kept as integers).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def to_dict(msg: Message) -> dict[str, Any]:
    """The fields set on ``msg``, recursively, as plain data."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        is_message = field.message_type is not None
        if field.is_repeated:
            out[field.name] = [to_dict(v) for v in value] if is_message else list(value)
        else:
            out[field.name] = to_dict(value) if is_message else value
    return out


def to_body(msg: Message, *, stream: bool) -> bytes:
    """The OpenAI JSON body of a request message. Raises ``ValueError`` when ``extra_json`` is
    not a JSON object."""
    data = to_dict(msg)
    extra_json = data.pop("extra_json", "")
    if "messages" in data:  # OpenAI wants role and content on every message, even ""
        data["messages"] = [
            {"role": m.role, "content": m.content}
            | ({"name": m.name} if m.HasField("name") else {})
            for m in getattr(msg, "messages", ())
        ]
    if extra_json:
        try:
            extra = json.loads(extra_json)
        except ValueError as exc:
            raise ValueError(f"extra_json is not JSON ({exc}); send a JSON object") from None
        if not isinstance(extra, dict):
            raise ValueError(f"extra_json must be a JSON object, got {extra_json[:80]!r}")
        data = {**extra, **data}
    data["stream"] = stream
    return json.dumps(data).encode()


def to_request(body: dict[str, Any], cls: type[M]) -> M:
    """An OpenAI body as ``cls``: each field that fits its typed field goes there, everything
    else (and ``stream``, which the method decides) into ``extra_json``."""
    msg = cls()
    fields = cls.DESCRIPTOR.fields_by_name
    extra: dict[str, Any] = {}
    for key, value in body.items():
        if key == "stream":
            continue
        if key == "stop" and isinstance(value, str):
            value = [value]
        if key not in fields or key == "extra_json" or value is None:
            if value is not None:
                extra[key] = value
            continue
        try:
            json_format.ParseDict({key: value}, msg)
        except (json_format.ParseError, ValueError, TypeError):
            msg.ClearField(key)
            extra[key] = value
    if extra:
        setattr(msg, "extra_json", json.dumps(extra))  # noqa: B010 (a field of every request)
    return msg


def to_message(payload: bytes, cls: type[M]) -> M:
    """A replica's JSON answer (or stream chunk) as ``cls``; fields it does not know are
    dropped. Raises ``ValueError`` when the payload does not fit."""
    try:
        return json_format.ParseDict(json.loads(payload), cls(), ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as exc:
        raise ValueError(f"the replica's answer does not fit {cls.__name__}: {exc}") from None
