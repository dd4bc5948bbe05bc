"""Request traces for the fleet simulator: parse JSON lines or CSV text into ``SimRequest``s.

A trace is one request a line (JSON lines) or a row (CSV) with an arrival time and the prompt
and output token counts. Columns are found by common names (``timestamp``; ``input_length``,
``prompt_tokens``, ``ContextTokens``...; ``output_length``, ``completion_tokens``,
``GeneratedTokens``...) or named by the caller. Arrival times may be seconds, milliseconds or
datetimes; they are shifted so the first request arrives at 0. ``time_scale`` replays the trace
that many times faster. A ``hash_ids`` field (prefix-block ids of 512 tokens, as in the Mooncake
traces) becomes the request's ``prefix_blocks``, so the simulated prompts share prefixes as the
trace's did; a ``region`` field names the request's client region (for ``shipit sim fleet``).
Pure: text in, records out; the caller reads the file. Errors say which
line, which column and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shipit.core.errors import ShipitError
from shipit.sim.results import SimRequest

# Normalised names (lower case, no spaces, dashes or underscores) looked up in this order.
TIME_NAMES = ("timestamp", "timestampms", "time", "arrivaltime", "arrivaltimestamp", "ts")
INPUT_NAMES = (
    "inputlength",
    "inputtokens",
    "prompttokens",
    "promptlength",
    "promptlen",
    "inputlen",
    "contexttokens",
    "requesttokens",
    "numprefilltokens",
)
OUTPUT_NAMES = (
    "outputlength",
    "outputtokens",
    "completiontokens",
    "generatedtokens",
    "responsetokens",
    "outputlen",
    "numdecodetokens",
)
ROLES = ("timestamp", "input", "output")
TIME_UNITS = ("auto", "s", "ms")
# Integer timestamps whose mean gap is at least this are milliseconds: a serving trace with
# one request every 50 s or more is implausible, one every 50 ms is common.
_MS_MIN_MEAN_GAP = 50.0
_EPOCH_MS_MIN = 1e11  # epoch milliseconds are ~1.7e12, epoch seconds ~1.7e9


# Tokens per ``hash_ids`` block, as the Mooncake traces define them.
HASH_BLOCK_TOKENS = 512


class TraceError(ShipitError):
    """The trace cannot be read as asked."""


@dataclass(frozen=True, slots=True)
class Columns:
    """Which field holds what; ``None``: find it by the common names."""

    timestamp: str | None = None
    input: str | None = None
    output: str | None = None

    @classmethod
    def parse(cls, spec: str | None) -> Columns:
        """``timestamp=TIME,input=ContextTokens,output=GeneratedTokens`` (any subset)."""
        if not spec:
            return cls()
        named: dict[str, str] = {}
        for part in spec.split(","):
            role, sep, name = part.partition("=")
            role = role.strip()
            if not sep or role not in ROLES or not name.strip():
                raise TraceError(
                    f"--columns entry {part!r} is not ROLE=NAME with ROLE one of "
                    f"{', '.join(ROLES)}; e.g. timestamp=TIME,input=ContextTokens",
                    field="columns",
                )
            named[role] = name.strip()
        return cls(**named)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _find(keys: Iterable[str], given: str | None, names: Sequence[str], role: str) -> str:
    keys = list(keys)
    if given is not None:
        if given in keys:
            return given
        raise TraceError(
            f"the {role} column {given!r} is not in the trace (columns: {', '.join(keys)})",
            field="columns",
        )
    by_norm = {_norm(k): k for k in keys}
    for name in names:
        if name in by_norm:
            return by_norm[name]
    raise TraceError(
        f"no {role} column among {', '.join(keys) or 'none'}; name it with --columns {role}=NAME",
        field="columns",
    )


def parse_trace(
    text: str,
    *,
    fmt: str = "auto",
    columns: Columns | None = None,
    time_unit: str = "auto",
    time_scale: float = 1.0,
) -> list[SimRequest]:
    """The requests of a trace, sorted by arrival, the first at 0 s. ``fmt``: ``jsonl``,
    ``csv`` or ``auto`` (JSON lines when the first non-blank character is ``{``)."""
    if time_scale <= 0:
        raise TraceError(f"time scale must be > 0, got {time_scale}", field="time_scale")
    if time_unit not in TIME_UNITS:
        raise TraceError(
            f"time unit {time_unit!r} is not one of {', '.join(TIME_UNITS)}", field="time_unit"
        )
    cols = columns or Columns()
    if fmt == "auto":
        fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
    if fmt == "jsonl":
        rows = _jsonl_rows(text)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        raise TraceError(f"trace format {fmt!r} is not jsonl, csv or auto", field="format")
    if not rows:
        raise TraceError("the trace has no requests", field="trace")
    keys = list(rows[0].keys())
    t_key = _find(keys, cols.timestamp, TIME_NAMES, "timestamp")
    i_key = _find(keys, cols.input, INPUT_NAMES, "input")
    o_key = _find(keys, cols.output, OUTPUT_NAMES, "output")
    times = _times([r.get(t_key) for r in rows], t_key, time_unit)
    t0 = min(times)
    out = [
        SimRequest(
            (t - t0) / time_scale,
            _tokens(r.get(i_key), i_key, n, minimum=1),
            _tokens(r.get(o_key), o_key, n, minimum=1),
            prefix_blocks=_hash_ids(r.get("hash_ids"), n),
            prefix_block_tokens=HASH_BLOCK_TOKENS,
            region=_region(r.get("region")),
        )
        for n, (t, r) in enumerate(zip(times, rows, strict=True), start=1)
    ]
    out.sort(key=lambda q: q.arrival_s)
    return out


def _region(value: object) -> str | None:
    """A ``region`` field: the client region's name (the fleet simulator's traffic regions)."""
    return value.strip() or None if isinstance(value, str) else None


def _hash_ids(value: object, row: int) -> tuple[int, ...]:
    """A row's prefix-block ids (``hash_ids``, as in the Mooncake traces), if any."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):  # a CSV cell: "[1, 2, 3]" or "1 2 3"
        value = [v for v in re.split(r"[\s,\[\]]+", value) if v]
    if not isinstance(value, list):
        raise TraceError(f"request {row}: hash_ids {value!r} is not a list of block ids")
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TraceError(f"request {row}: hash_ids {value!r} is not a list of block ids") from None


def _jsonl_rows(text: str) -> list[Mapping[str, object]]:
    rows: list[Mapping[str, object]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"line {n} is not JSON ({exc.msg}): {line[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise TraceError(f"line {n} is not a JSON object: {line[:80]!r}")
        rows.append(obj)
    return rows


def _tokens(value: object, key: str, row: int, *, minimum: int) -> int:
    try:
        n = int(float(str(value)))
    except ValueError:
        raise TraceError(f"request {row}: {key} {value!r} is not a token count") from None
    # A zero-length output still streams one token on a replica; a prompt has at least one.
    return max(n, minimum)


def _times(values: list[object], key: str, unit: str) -> list[float]:
    """Arrival times in seconds (not yet shifted to start at 0)."""
    numbers: list[float] = []
    for n, v in enumerate(values, start=1):
        if isinstance(v, int | float):
            numbers.append(float(v))
            continue
        text = str(v).strip()
        try:
            numbers.append(float(text))
        except ValueError:
            if numbers:
                raise TraceError(f"request {n}: {key} {text!r} is not a number") from None
            return [_datetime(str(x), key, i) for i, x in enumerate(values, start=1)]
    if unit == "auto":
        unit = _guess_unit(numbers, key)
    return [x / 1000.0 for x in numbers] if unit == "ms" else numbers


def _guess_unit(numbers: list[float], key: str) -> str:
    if _norm(key).endswith("ms"):
        return "ms"
    if max(numbers) >= _EPOCH_MS_MIN:
        return "ms"
    if all(x.is_integer() for x in numbers) and len(numbers) > 1:
        mean_gap = (max(numbers) - min(numbers)) / (len(numbers) - 1)
        if mean_gap >= _MS_MIN_MEAN_GAP:
            return "ms"
    return "s"


def _datetime(text: str, key: str, row: int) -> float:
    # ISO datetimes with more than 6 fractional digits (some public traces have 7).
    clean = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    try:
        when = datetime.fromisoformat(clean)
    except ValueError:
        raise TraceError(
            f"request {row}: {key} {text!r} is neither a number (seconds, milliseconds) nor "
            f"an ISO datetime; pick another column with --columns timestamp=NAME"
        ) from None
    # Naive datetimes are taken as UTC: only the gaps between them matter.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
