"""PNG plots of a fleet simulation, from its report (so an old ``fleet_sim.json`` re-plots).

Four figures: replicas by plane and pool over time (stacked), SLO attainment over time (all
and per client region), cost per hour, and pre-emptions, GPU failures and recoveries
(cumulative) with plane outages and failovers marked. matplotlib is imported inside, with the
Agg backend chosen there, as ``bench.plots`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _failovers(ax: Any, report: dict[str, Any]) -> None:
    for f in report.get("failovers", []):
        color = "red" if f["reason_code"] == "out" else "green"
        ax.axvline(f["t_h"], color=color, linewidth=0.8, linestyle="--", alpha=0.7)


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> Path:
    """Every plot's finish: a light grid, a tight layout, the PNG written, the figure freed."""
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_replicas(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    s = report["series"]
    keys = sorted(k for k in s if k.startswith("replicas:"))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    if keys:
        ax.stackplot(s["t_h"], *[s[k] for k in keys], labels=[k[9:] for k in keys], alpha=0.85)
    _failovers(ax, report)
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("replicas (starting, ready, draining)")
    ax.set_title("Replicas by plane and pool")
    ax.legend(loc="upper left", fontsize=7, ncol=3)
    return _save(plt, fig, ax, path)


def plot_slo(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    s = report["series"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for k in sorted(k for k in s if k.startswith("slo:")):
        ax.plot(s["t_h"], s[k], linewidth=0.9, label=k[4:], alpha=0.8)
    ax.plot(s["t_h"], s["slo_attainment"], color="black", linewidth=1.6, label="all")
    _failovers(ax, report)
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("TTFT SLO attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("SLO attainment per sample window (dashed: plane out in red, back in green)")
    ax.legend(loc="lower left", fontsize=8)
    return _save(plt, fig, ax, path)


def plot_cost(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    s = report["series"]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(s["t_h"], s["usd_per_hour"], color="tab:purple")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("$ per hour")
    ax.set_title(f"Cost per hour (total ${report['cost_usd']:,.0f})")
    return _save(plt, fig, ax, path)


def plot_faults(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    s = report["series"]
    fig, ax = plt.subplots(figsize=(11, 4))
    for key, label in (
        ("preemptions", "spot pre-emptions"),
        ("gpu_failures", "GPU failures"),
        ("recoveries", "replacements ready"),
    ):
        ax.step(s["t_h"], s[key], where="post", label=label)
    _failovers(ax, report)
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("cumulative count")
    ax.set_title("Failures and recoveries")
    ax.legend(loc="upper left", fontsize=8)
    return _save(plt, fig, ax, path)


def write_fleet_plots(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_replicas(report, out / "replicas.png"),
        plot_slo(report, out / "slo.png"),
        plot_cost(report, out / "cost.png"),
        plot_faults(report, out / "faults.png"),
    ]
