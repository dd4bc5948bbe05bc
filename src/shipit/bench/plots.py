"""PNG plots of a bench result: latency CDFs, throughput vs latency, TTFT and in-flight over time.

Owns drawing only, from the result document (so an old result file can be re-plotted).
matplotlib is imported inside the functions with the Agg backend chosen there: importing this
module must not pick a GUI backend or cost matplotlib's import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shipit.bench.config import slo_parts


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slo_limits(result: dict[str, Any], metric: str) -> list[tuple[float, str]]:
    """The ``--slo`` limits on ``metric`` (ttft, tpot, e2e, itl) as (ms, label)."""
    out = []
    for key, value in sorted(((result.get("config") or {}).get("slo_ms") or {}).items()):
        name, pct = slo_parts(key)
        if name == metric:
            at = f" P{pct}" if pct is not None else ""
            out.append((float(value), f"SLO {metric.upper()}{at} {float(value):g} ms"))
    return out


def _draw_slo(ax: Any, limits: list[tuple[float, str]], *, vertical: bool) -> None:
    for value, label in limits:
        line = ax.axvline if vertical else ax.axhline
        line(value, color="red", linewidth=1.0, linestyle="--", label=label)


def _label(point: dict[str, Any]) -> str:
    unit = {"rate": " req/s", "concurrency": " in flight", "trace": "x trace"}.get(
        point["mode"], ""
    )
    return f"{point['value']:g}{unit}"


def _ok_values(point: dict[str, Any], key: str) -> np.ndarray:
    vals = [r[key] for r in point["requests"] if r["error"] is None and r[key] is not None]
    return np.sort(np.asarray(vals, dtype=float))


def plot_cdfs(result: dict[str, Any], path: Path) -> Path:
    """TTFT, TPOT and E2E empirical CDFs, one line per load point, P50/P99 marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title) in zip(
        axes, [("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")], strict=True
    ):
        for point in result["points"]:
            values = _ok_values(point, key)
            if values.size:
                ax.step(
                    values,
                    np.arange(1, values.size + 1) / values.size,
                    where="post",
                    label=_label(point),
                )
        for q in (0.5, 0.99):
            ax.axhline(q, color="grey", linewidth=0.6, linestyle=":")
        _draw_slo(ax, slo_limits(result, key.removesuffix("_ms")), vertical=True)
        ax.set_title(f"{title} CDF")
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{result['config']['target']['model']}: latency CDFs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(result: dict[str, Any], path: Path) -> Path:
    """Output token throughput against TTFT and TPOT percentiles, one marker per load point."""
    plt = _pyplot()
    summaries = [p["summary"] for p in result["points"]]
    x = [s["output_throughput_tok_s"] for s in summaries]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "tpot_ms", "TPOT")):
        for pct, style in (("p50", "o-"), ("p99", "s--")):
            y = [(s[key] or {}).get(pct, np.nan) for s in summaries]
            ax.plot(x, y, style, label=f"{title} {pct.upper()}")
        _draw_slo(ax, slo_limits(result, key.removesuffix("_ms")), vertical=False)
        for s, xi in zip(summaries, x, strict=True):
            ax.annotate(
                f"{s['value']:g}",
                (xi, (s[key] or {}).get("p99", np.nan)),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(f"{title} vs throughput (labels: {summaries[0]['mode']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def in_flight_curve(requests: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(times_s, requests open) as a step function from each request's start and end."""
    events = sorted([(r["start_s"], 1) for r in requests] + [(r["end_s"], -1) for r in requests])
    if not events:
        return np.zeros(1), np.zeros(1)
    times = np.array([t for t, _ in events])
    level = np.cumsum([d for _, d in events])
    return times, level


def plot_timeline(
    point: dict[str, Any], path: Path, slo: list[tuple[float, str]] | None = None
) -> Path:
    """TTFT of every request at its send time (errors marked) above the in-flight count, with
    the TTFT SLO as a line."""
    plt = _pyplot()
    reqs = point["requests"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    ok = [r for r in reqs if r["error"] is None and r["ttft_ms"] is not None]
    top.scatter([r["start_s"] for r in ok], [r["ttft_ms"] for r in ok], s=8, label="TTFT")
    failed = [r for r in reqs if r["error"] is not None]
    if failed:
        top.scatter(
            [r["start_s"] for r in failed],
            [0] * len(failed),
            marker="x",
            color="red",
            label=f"errors ({len(failed)})",
        )
    _draw_slo(top, slo or [], vertical=False)
    top.set_ylabel("TTFT (ms)")
    top.set_title(f"TTFT and requests in flight over time ({_label(point)})")
    top.grid(alpha=0.3)
    top.legend(fontsize="small")
    times, level = in_flight_curve(reqs)
    bottom.step(times, level, where="post")
    bottom.set_xlabel("time since start (s)")
    bottom.set_ylabel("requests in flight")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """All plots for ``result`` into ``out_dir``: CDFs, a sweep plot when there are several
    points, and one timeline per point."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_cdfs(result, out / "latency_cdf.png")]
    if len(result["points"]) > 1:
        paths.append(plot_sweep(result, out / "throughput_vs_latency.png"))
    for i, point in enumerate(result["points"]):
        paths.append(
            plot_timeline(
                point,
                out / f"timeline_{i}_{point['mode']}_{point['value']:g}.png",
                slo_limits(result, "ttft"),
            )
        )
    return paths
