"""What ``shipit top`` shows, computed from two scrapes of a running shipit (pure, no IO).

Owns turning a ``Scrape`` (the gateway's ``/metrics`` samples, its ``/shipit/status`` JSON and
each replica's ``/metrics`` samples, taken at one instant) and the previous one into a
``Frame``: per deployment req/s, error ratio, goodput, output tokens/s, TTFT/TPOT P50/P99 over
the interval (``telemetry.window``, the same arithmetic as the alert loop), queue depth,
in-flight, scale events and alerts; per replica state, in-flight, running/waiting, KV usage and
prefix-cache hit rate over the interval. Rendering it as Rich tables is ``render``'s job; this
module must not fetch anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.samples import Sample
from rich.console import Group
from rich.table import Table

from shipit.telemetry import catalog as cat
from shipit.telemetry.window import WindowStats, readings, window


@dataclass(frozen=True, slots=True)
class Scrape:
    at_s: float
    gateway: tuple[Sample, ...]
    status: dict[str, Any]
    replicas: dict[str, tuple[Sample, ...]] = field(default_factory=dict)  # replica id → samples


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    deployment: str
    replica: str
    state: str
    in_flight: int
    running: float | None
    waiting: float | None
    kv_usage: float | None
    prefix_hit_rate: float | None
    requests_per_s: float | None


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    name: str
    model: str
    replicas: str
    stats: WindowStats | None
    queue_depth: int
    in_flight: int
    scale_ups: float
    scale_downs: float
    alerts: int


@dataclass(frozen=True, slots=True)
class Frame:
    url: str
    interval_s: float | None
    deployments: list[DeploymentRow]
    replicas: list[ReplicaRow]
    alerts: list[dict[str, Any]]


def _sum(samples: tuple[Sample, ...], name: str, **labels: str) -> float | None:
    values = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def _delta(new: float | None, old: float | None) -> float | None:
    if new is None:
        return None
    return new - old if old is not None and new >= old else new


def _replica_row(dep: str, r: dict[str, Any], cur: Scrape, prev: Scrape | None) -> ReplicaRow:
    rid = r["id"]
    now = cur.replicas.get(rid, ())
    before = prev.replicas.get(rid, ()) if prev else ()
    hits = _delta(_sum(now, cat.VLLM_PREFIX_HITS.name), _sum(before, cat.VLLM_PREFIX_HITS.name))
    queries = _delta(
        _sum(now, cat.VLLM_PREFIX_QUERIES.name), _sum(before, cat.VLLM_PREFIX_QUERIES.name)
    )
    done = _delta(
        _sum(now, cat.VLLM_REQUEST_SUCCESS.name), _sum(before, cat.VLLM_REQUEST_SUCCESS.name)
    )
    span = cur.at_s - prev.at_s if prev else None
    return ReplicaRow(
        deployment=dep,
        replica=rid,
        state=r["state"],
        in_flight=int(r.get("in_flight", 0)),
        running=_sum(now, cat.VLLM_RUNNING.name),
        waiting=_sum(now, cat.VLLM_WAITING.name),
        kv_usage=_sum(now, cat.VLLM_KV_USAGE.name),
        prefix_hit_rate=hits / queries if hits is not None and queries else None,
        requests_per_s=done / span if done is not None and span and before else None,
    )


def _gateway_window(status: dict[str, Any]) -> tuple[float, dict[str, WindowStats]] | None:
    """The figures the gateway computed over ``?window_s=`` from its counter history."""
    w = status.get("window")
    if not isinstance(w, dict) or not w.get("seconds"):
        return None
    stats = {name: WindowStats(**fields) for name, fields in w.get("deployments", {}).items()}
    return float(w["seconds"]), stats


def build_frame(url: str, cur: Scrape, prev: Scrape | None) -> Frame:
    span = cur.at_s - prev.at_s if prev else None
    now_r = readings(cur.gateway)
    old_r = readings(prev.gateway) if prev else {}
    gw_window = _gateway_window(cur.status)
    if gw_window is not None:
        span = gw_window[0]
    alerts = list(cur.status.get("alerts") or [])
    deployments, replicas = [], []
    for d in cur.status.get("deployments", []):
        name = d["name"]
        reps = d.get("replicas", [])
        ready = sum(1 for r in reps if r["state"] == "ready")
        if gw_window is not None:
            stats = gw_window[1].get(name)
        elif span and name in now_r:
            stats = window(old_r.get(name), now_r[name], span)
        else:
            stats = None
        deployments.append(
            DeploymentRow(
                name=name,
                model=d.get("model", ""),
                replicas=f"{ready}/{len(reps)}",
                stats=stats,
                queue_depth=int(d.get("queue_depth", 0)),
                in_flight=sum(int(r.get("in_flight", 0)) for r in reps),
                scale_ups=_sum(cur.gateway, cat.SCALE_EVENTS.name, deployment=name, direction="up")
                or 0.0,
                scale_downs=_sum(
                    cur.gateway, cat.SCALE_EVENTS.name, deployment=name, direction="down"
                )
                or 0.0,
                alerts=sum(1 for a in alerts if a.get("deployment") == name),
            )
        )
        replicas += [_replica_row(name, r, cur, prev) for r in reps]
    return Frame(url, span, deployments, replicas, alerts)


def _ms(value_s: float | None) -> str:
    return "-" if value_s is None else f"{value_s * 1e3:.0f}"


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def deployments_table(frame: Frame) -> Table:
    over = "" if frame.interval_s is None else f"  (rates over the last {frame.interval_s:.0f}s)"
    t = Table(title=f"shipit top  {frame.url}{over}", title_justify="left")
    head = ("deployment", "model", "ready", "req/s", "errors", "goodput", "tok/s")
    tail = ("TTFT p50/p99 ms", "TPOT p50/p99 ms", "queue", "in-flight", "scale +/-", "alerts")
    for col in (*head, *tail):
        t.add_column(col)
    for d in frame.deployments:
        s = d.stats
        t.add_row(
            d.name,
            d.model,
            d.replicas,
            _num(s.requests_per_s if s else None),
            _pct(s.error_ratio if s else None),
            _pct(s.goodput_ratio if s else None),
            _num(s.output_tokens_per_s if s else None, "{:.0f}"),
            f"{_ms(s.ttft_p50_s if s else None)}/{_ms(s.ttft_p99_s if s else None)}",
            f"{_ms(s.tpot_p50_s if s else None)}/{_ms(s.tpot_p99_s if s else None)}",
            str(d.queue_depth),
            str(d.in_flight),
            f"{d.scale_ups:.0f}/{d.scale_downs:.0f}",
            str(d.alerts),
        )
    return t


def replicas_table(frame: Frame) -> Table:
    t = Table(title="replicas", title_justify="left")
    cols = ("deployment", "replica", "state", "in-flight", "req/s", "running", "waiting")
    for col in (*cols, "KV used", "prefix hits"):
        t.add_column(col)
    for r in frame.replicas:
        t.add_row(
            r.deployment,
            r.replica,
            r.state,
            str(r.in_flight),
            _num(r.requests_per_s),
            _num(r.running, "{:.0f}"),
            _num(r.waiting, "{:.0f}"),
            _pct(r.kv_usage),
            _pct(r.prefix_hit_rate),
        )
    return t


def alerts_table(frame: Frame) -> Table:
    t = Table(title=f"alerts ({len(frame.alerts)})", title_justify="left")
    for col in ("deployment", "metric", "state", "value", "baseline", "score"):
        t.add_column(col)
    for a in frame.alerts:
        t.add_row(
            str(a.get("deployment")),
            str(a.get("metric")),
            str(a.get("state")),
            _num(a.get("value"), "{:.4g}"),
            _num(a.get("baseline"), "{:.4g}"),
            _num(a.get("score")),
        )
    return t


def render(frame: Frame) -> Group:
    return Group(deployments_table(frame), replicas_table(frame), alerts_table(frame))
