"""Errors the gateway writes itself, in the one OpenAI error vocabulary (``core.openai_errors``).

Owns turning a kind of the vocabulary (status, ``type``, string ``code``) into response bytes,
and which kind each gateway refusal is: a bad body (400), an unknown model or path (404), a
wrong method (405, with ``Allow``), a full queue or a shed request (429), a cold start that
outlasted the hold (503), a deadline or queue timeout (504), replicas that all failed
(502/504). Answers relayed from a replica are passed through untouched, so a client sees one
vocabulary whichever side refused. It must not route or decide anything.
"""

from __future__ import annotations

import json

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError


def error_json(kind: oe.ErrorKind, message: str, param: str | None = None) -> bytes:
    """OpenAI's error object as JSON bytes."""
    return json.dumps(oe.error_body(message, kind, param)).encode()


def kind_of(exc: ShipitError) -> oe.ErrorKind:
    """The kind for an error raised while reading a request (the replica's mapping)."""
    return oe.kind_of(exc)


def admission_kind(status: int) -> oe.ErrorKind:
    """The kind of an admission refusal by its status: 429 (queue full, shed), 503 (no
    replica became ready within the cold-start hold), else 504 (deadline, queue timeout)."""
    if status == 429:
        return oe.QUEUE_FULL
    if status == 503:
        return oe.UNAVAILABLE
    return oe.TIMEOUT


def upstream_kind(status: int) -> oe.ErrorKind:
    """Every attempt failed: 504 when the last one timed out, else 502."""
    return oe.TIMEOUT if status == 504 else oe.UPSTREAM_ERROR
