"""One call that runs a whole bench: build the workload, run every load point, summarize.

Owns the order of a run (workload once, then each rate or concurrency of a sweep on the same
sessions) and the notes a reader must see next to the figures (token counts from chunks, a
generator that fell behind its schedule). The CLI and tests call ``run_bench``; it must not
print or draw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipit.bench.arrivals import arrival_offsets_s
from shipit.bench.client import Sender
from shipit.bench.config import BenchConfig
from shipit.bench.metrics import Summary, summarize
from shipit.bench.records import Arrival, Session, Turn
from shipit.bench.report import point_json, result_json
from shipit.bench.runner import PointResult, ProgressSink, run_closed_loop, run_open_loop
from shipit.bench.senders import open_sender
from shipit.bench.sources import sharegpt_sessions, trace_arrivals
from shipit.bench.workload import synthetic_sessions
from shipit.core.errors import ShipitError

# Above this P99 delay between "due" and "sent", open-loop figures describe the generator,
# not the server: say so in the result.
SEND_LAG_WARN_MS = 10.0

ProgressFactory = Callable[[str], ProgressSink | None]


def build_sessions(cfg: BenchConfig) -> list[Session]:
    w, n = cfg.workload, cfg.load.num_requests
    if w.sharegpt_path:
        return sharegpt_sessions(
            w.sharegpt_path,
            model=cfg.target.model,
            count=n,
            turns=w.turns,
            seed=cfg.seed,
            think_time_s=w.think_time_s,
        )
    return synthetic_sessions(w, model=cfg.target.model, count=n, seed=cfg.seed)


def _notes(summaries: list[Summary]) -> list[str]:
    notes: list[str] = []
    if any(s.tokens_source == "tokenizer" for s in summaries):
        notes.append(
            "output token counts come from --tokenizer for some requests: the server sent no "
            "usage (stream_options.include_usage); they are exact only if it is the model's "
            "own tokenizer"
        )
    if any(s.tokens_source in ("chunks", "mixed") for s in summaries):
        notes.append(
            "output token counts come from counting streamed content chunks for some requests: "
            "the server sent no usage (stream_options.include_usage); a server that packs several "
            "tokens per chunk makes TPOT look larger than it is"
        )
    for s in summaries:
        if s.send_lag_ms is not None and s.send_lag_ms.p99 > SEND_LAG_WARN_MS:
            notes.append(
                f"at {s.mode}={s.value:g} the generator sent requests up to "
                f"{s.send_lag_ms.p99:.1f} ms (P99) after they were due: the load was lower "
                "than asked; see `shipit bench self-check` for this machine's ceiling"
            )
        if s.failed:
            notes.append(
                f"at {s.mode}={s.value:g}: {s.failed} request(s) failed: {s.errors_by_kind}"
            )
    return notes


async def warm_up(cfg: BenchConfig, sender: Sender, sessions: list[Session]) -> None:
    """Send ``warmup_requests`` unmeasured requests: the first connection and the client's
    first-use costs (about 20 ms here) must not land on a measured request. A target that
    cannot be reached at all fails here, with the URL in the message."""
    for i in range(cfg.load.warmup_requests if sessions else 0):
        s = sessions[i % len(sessions)]
        turn = Turn(s.turns[0].prompt, s.turns[0].input_tokens, min(s.turns[0].max_tokens, 16))
        out = await sender.send(
            session=-1,
            turn=0,
            model=s.model,
            history=[],
            current=turn,
            scheduled_ns=None,
            keep_text=False,
        )
        if out.record.error in ("connect", "timeout") or (out.record.error or "") == "http_404":
            raise ShipitError(
                f"warm-up request to {cfg.target.endpoint_url()} failed ({out.record.error}: "
                f"{out.record.error_detail}); check --url (base URL, e.g. http://127.0.0.1:8000) "
                "and that the server is up",
                field="url",
            )


async def run_points(
    cfg: BenchConfig, sender: Sender, progress: ProgressFactory | None = None
) -> list[tuple[PointResult, Summary]]:
    make = progress or (lambda _label: None)
    out: list[tuple[PointResult, Summary]] = []
    if cfg.workload.trace_path:
        arrivals = trace_arrivals(
            cfg.workload.trace_path,
            model=cfg.target.model,
            speed=cfg.workload.trace_speed,
            seed=cfg.seed,
            prefix_tokens=cfg.workload.prefix_tokens or 64,
        )
        await warm_up(cfg, sender, [a.session for a in arrivals])
        point = await run_open_loop(
            sender,
            arrivals,
            mode="trace",
            value=cfg.workload.trace_speed,
            progress=make(f"trace x{cfg.workload.trace_speed:g}"),
        )
        return [(point, summarize(point, cfg.slo_ms))]
    sessions = build_sessions(cfg)
    await warm_up(cfg, sender, sessions)
    for mode, value in cfg.load.points():
        if mode == "rate":
            offsets = arrival_offsets_s(
                kind=cfg.load.arrival,
                rate_rps=value,
                count=len(sessions),
                burstiness=cfg.load.burstiness,
                seed=cfg.seed,
            )
            arrivals = [Arrival(o, s) for o, s in zip(offsets, sessions, strict=True)]
            point = await run_open_loop(
                sender, arrivals, mode="rate", value=value, progress=make(f"rate {value:g}/s")
            )
        else:
            point = await run_closed_loop(
                sender, sessions, concurrency=int(value), progress=make(f"concurrency {int(value)}")
            )
        out.append((point, summarize(point, cfg.slo_ms)))
    return out


async def run_bench(cfg: BenchConfig, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Run ``cfg`` against its target and return the result document (see ``report``)."""
    async with open_sender(cfg.target) as sender:
        results = await run_points(cfg, sender, progress)
    summaries = [s for _, s in results]
    return result_json(cfg, [point_json(p, s) for p, s in results], _notes(summaries))
