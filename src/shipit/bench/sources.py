"""Workloads read from the user's files: a ShareGPT conversation dump and a request trace CSV.

Owns file parsing and the errors a user sees when a file is not what we expect (naming the
file, the row and the column). Turns rows into ``Session``/``Arrival`` records; must not send
anything.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from shipit.bench.arrivals import scale_trace_offsets_s
from shipit.bench.records import Arrival, Session, Turn
from shipit.bench.workload import prefix_text, words
from shipit.core.errors import InvalidRequestError

TRACE_COLUMNS = ("timestamp", "input_tokens", "output_tokens")
TRACE_OPTIONAL = ("prefix_group", "adapter")


def approx_tokens(text: str) -> int:
    """About four characters per token for English text; used only to size max_tokens."""
    return max(1, round(len(text) / 4))


def _sharegpt_turns(entry: Any, max_turns: int) -> list[Turn]:
    convo = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(convo, list):
        return []
    turns: list[Turn] = []
    for ask, answer in zip(convo[::2], convo[1::2], strict=False):
        if not (isinstance(ask, dict) and isinstance(answer, dict)):
            break
        if ask.get("from") not in ("human", "user") or answer.get("from") not in (
            "gpt",
            "assistant",
        ):
            break
        prompt, reply = str(ask.get("value", "")), str(answer.get("value", ""))
        if not prompt:
            break
        turns.append(Turn(prompt, approx_tokens(prompt), approx_tokens(reply)))
        if len(turns) == max_turns:
            break
    return turns


def sharegpt_sessions(
    path: str, *, model: str, count: int, turns: int, seed: int, think_time_s: float = 0.0
) -> list[Session]:
    """Sessions from a ShareGPT JSON file (a list of {"conversations": [{"from", "value"}...]}).

    Each conversation gives up to ``turns`` (human, gpt) pairs; the gpt reply's length sets
    max_tokens. Conversations are shuffled with ``seed`` and taken until ``count`` requests.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(
            f"cannot read ShareGPT file {path}: {exc}", field="sharegpt"
        ) from exc
    if not isinstance(data, list):
        raise InvalidRequestError(
            f"{path}: expected a JSON list of conversations, got {type(data).__name__}",
            field="sharegpt",
        )
    order = np.random.default_rng(seed).permutation(len(data))
    sessions: list[Session] = []
    taken = 0
    for i in order:
        got = _sharegpt_turns(data[int(i)], min(turns, count - taken))
        if got:
            sessions.append(Session(model, tuple(got), None, think_time_s))
            taken += len(got)
        if taken >= count:
            break
    if not sessions:
        raise InvalidRequestError(
            f"{path}: no usable conversation (need human/gpt pairs under 'conversations')",
            field="sharegpt",
        )
    return sessions


def _trace_row(row: dict[str, str], line: int, path: str) -> tuple[float, int, int, str, str]:
    try:
        ts = float(row["timestamp"])
        n_in, n_out = int(row["input_tokens"]), int(row["output_tokens"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"{path} line {line}: cannot read timestamp/input_tokens/output_tokens from {row}",
            field="trace",
        ) from exc
    if n_in < 1 or n_out < 1:
        raise InvalidRequestError(
            f"{path} line {line}: token counts must be >= 1, got {n_in}/{n_out}", field="trace"
        )
    return (
        ts,
        n_in,
        n_out,
        (row.get("prefix_group") or "").strip(),
        (row.get("adapter") or "").strip(),
    )


def trace_arrivals(
    path: str, *, model: str, speed: float, seed: int, prefix_tokens: int = 64
) -> list[Arrival]:
    """Arrivals replayed from a CSV with columns timestamp (s), input_tokens, output_tokens and
    optional prefix_group and adapter; ``speed`` 2.0 replays twice as fast.

    Rows that share a prefix_group start with the same ``prefix_tokens`` words (counted in
    their input_tokens); a non-empty adapter becomes the request's model.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidRequestError(
                    f"{path}: missing column(s) {', '.join(missing)}; a trace needs "
                    f"{', '.join(TRACE_COLUMNS)} and may have {', '.join(TRACE_OPTIONAL)}",
                    field="trace",
                )
            rows = [_trace_row(r, i + 2, path) for i, r in enumerate(reader)]
    except OSError as exc:
        raise InvalidRequestError(f"cannot read trace {path}: {exc}", field="trace") from exc
    rng = np.random.default_rng(seed)
    offsets = scale_trace_offsets_s([r[0] for r in rows], speed=speed)
    group_ids: dict[str, int] = {}
    arrivals: list[Arrival] = []
    for offset, (_, n_in, n_out, group, adapter) in zip(offsets, rows, strict=True):
        gid = group_ids.setdefault(group, len(group_ids)) if group else None
        shared = min(prefix_tokens, n_in - 1) if gid is not None else 0
        prompt = words(rng, n_in - shared)
        if gid is not None and shared > 0:
            prompt = prefix_text(gid, shared, seed) + " " + prompt
        session = Session(adapter or model, (Turn(prompt, n_in, n_out),), gid)
        arrivals.append(Arrival(offset, session))
    arrivals.sort(key=lambda a: a.offset_s)
    return arrivals
