"""The result file: one JSON document per run, and the comparison of two of them.

Owns the result schema (config, one entry per load point with its summary and per-request
rows, plus notes a reader must see) and ``compare``. Plots and ``shipit bench compare`` read
only this document, so a result can be re-rendered anywhere. Must not render tables or plots.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipit import __version__
from shipit.bench.config import BenchConfig
from shipit.bench.metrics import NS_PER_MS, Summary
from shipit.bench.runner import PointResult
from shipit.core.errors import InvalidRequestError

SCHEMA = "shipit.bench.result/v1"


def request_rows(point: PointResult) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(point.records, key=lambda r: r.start_ns):
        ttft, tpot = r.ttft_ns, r.tpot_ns
        rows.append(
            {
                "session": r.session,
                "turn": r.turn,
                "model": r.model,
                "due_s": None
                if r.scheduled_ns is None
                else round((r.scheduled_ns - point.t0_ns) / 1e9, 6),
                "start_s": round((r.start_ns - point.t0_ns) / 1e9, 6),
                "end_s": round((r.end_ns - point.t0_ns) / 1e9, 6),
                "ttft_ms": None if ttft is None else round(ttft / NS_PER_MS, 3),
                "tpot_ms": None if tpot is None else round(tpot / NS_PER_MS, 3),
                "e2e_ms": round(r.e2e_ns / NS_PER_MS, 3),
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "error": r.error,
                "error_detail": r.error_detail,
            }
        )
    return rows


def point_json(point: PointResult, summary: Summary) -> dict[str, Any]:
    return {
        "mode": point.mode,
        "value": point.value,
        "started_unix_s": point.started_unix_s,
        "summary": asdict(summary),
        "requests": request_rows(point),
    }


def result_json(cfg: BenchConfig, points: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "shipit_version": __version__,
        "created_unix_s": time.time(),
        "config": cfg.model_dump(mode="json"),
        "notes": notes,
        "points": points,
    }


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return out


def load_result(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"cannot read bench result {path}: {exc}", field="path") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InvalidRequestError(
            f"{path} is not a shipit bench result (expected schema {SCHEMA!r}); "
            "write one with `shipit bench ... --result-json PATH`",
            field="path",
        )
    return data


@dataclass(frozen=True, slots=True)
class CompareRow:
    point: int
    metric: str
    a: float | None
    b: float | None
    better: str  # "higher" or "lower"

    @property
    def delta_pct(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a) * 100.0

    @property
    def improved(self) -> bool | None:
        d = self.delta_pct
        if d is None or math.isclose(d, 0.0, abs_tol=1e-9):
            return None
        return (d > 0) == (self.better == "higher")


_COMPARED: tuple[tuple[str, str | None, str], ...] = (
    ("request_throughput_rps", None, "higher"),
    ("output_throughput_tok_s", None, "higher"),
    ("goodput_rps", None, "higher"),
    ("ttft_ms", "p50", "lower"),
    ("ttft_ms", "p99", "lower"),
    ("tpot_ms", "p50", "lower"),
    ("tpot_ms", "p99", "lower"),
    ("itl_ms", "p99", "lower"),
    ("e2e_ms", "p50", "lower"),
    ("e2e_ms", "p99", "lower"),
    ("failed", None, "lower"),
)


def _pick(summary: dict[str, Any], key: str, sub: str | None) -> float | None:
    value = summary.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[CompareRow]:
    """Metric by metric, point by point (matched in order), B against A."""
    rows: list[CompareRow] = []
    for i, (pa, pb) in enumerate(zip(a["points"], b["points"], strict=False)):
        for key, sub, better in _COMPARED:
            name = key if sub is None else f"{key} {sub}"
            rows.append(
                CompareRow(
                    i, name, _pick(pa["summary"], key, sub), _pick(pb["summary"], key, sub), better
                )
            )
    return rows
