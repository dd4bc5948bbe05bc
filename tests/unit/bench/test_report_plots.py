"""Result documents, compare, and that plots are written from a result alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipit.bench.config import BenchConfig, TargetConfig
from shipit.bench.metrics import summarize
from shipit.bench.plots import in_flight_curve, write_plots
from shipit.bench.records import RequestRecord
from shipit.bench.report import compare, load_result, point_json, result_json, write_result
from shipit.bench.runner import PointResult
from shipit.core.errors import InvalidRequestError

MS = 1_000_000


def make_result(ttft_ms: int, mode: str = "rate", values: tuple[float, ...] = (1.0, 2.0)) -> dict:
    cfg = BenchConfig(target=TargetConfig(url="u", model="m"))
    points = []
    for v in values:
        records = tuple(
            RequestRecord(
                i,
                0,
                "m",
                i * 100 * MS,
                i * 100 * MS,
                i * 100 * MS + 300 * MS,
                tuple(i * 100 * MS + (ttft_ms + 10 * k) * MS for k in range(5)),
                10,
                5,
                "usage",
                "http_500" if i == 7 else None,
            )
            for i in range(8)
        )
        point = PointResult(mode, v, 0, 0.0, records)
        points.append(point_json(point, summarize(point, {"ttft_p99_ms": 100})))
    return result_json(cfg, points, ["a note"])


def test_result_round_trips_and_rows_are_per_request(tmp_path: Path) -> None:
    result = make_result(50)
    path = write_result(result, tmp_path / "deep" / "r.json")
    loaded = load_result(path)
    assert loaded["points"][0]["summary"]["completed"] == 7
    row = loaded["points"][0]["requests"][1]
    assert (row["start_s"], row["due_s"], row["ttft_ms"], row["e2e_ms"]) == (0.1, 0.1, 50.0, 300.0)
    assert row["tpot_ms"] == pytest.approx(250 / 4)
    (tmp_path / "x.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(InvalidRequestError, match="not a shipit bench result"):
        load_result(tmp_path / "x.json")


def test_compare_reports_direction() -> None:
    rows = compare(make_result(50), make_result(100))
    ttft = next(r for r in rows if r.metric == "ttft_ms p50" and r.point == 0)
    assert (ttft.a, ttft.b, ttft.delta_pct, ttft.improved) == (50.0, 100.0, 100.0, False)
    rps = next(r for r in rows if r.metric == "request_throughput_rps" and r.point == 1)
    assert rps.improved is None  # unchanged
    assert {r.point for r in rows} == {0, 1}


def test_in_flight_curve() -> None:
    times, level = in_flight_curve([{"start_s": 0, "end_s": 2}, {"start_s": 1, "end_s": 3}])
    assert list(times) == [0, 1, 2, 3] and list(level) == [1, 2, 1, 0]


def test_plots_are_pngs(tmp_path: Path) -> None:
    paths = write_plots(make_result(50), tmp_path)
    assert [p.name for p in paths] == [
        "latency_cdf.png",
        "throughput_vs_latency.png",
        "timeline_0_rate_1.png",
        "timeline_1_rate_2.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = write_plots(make_result(50, "concurrency", (4.0,)), tmp_path / "one")
    assert len(single) == 2


def test_plots_draw_the_slo_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shipit.bench import plots

    result = make_result(50)
    result["config"]["slo_ms"] = {"ttft_p99_ms": 100.0, "tpot_p99_ms": 20.0}
    plt = plots._pyplot()
    figures: list[object] = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    write_plots(result, tmp_path)
    labelled: dict[str, list[str]] = {}
    for fig in figures:
        for ax in fig.axes:  # type: ignore[attr-defined]
            slo = [ln.get_label() for ln in ax.get_lines() if ln.get_label().startswith("SLO")]
            labelled.setdefault(ax.get_title(), []).extend(slo)
    assert labelled["TTFT CDF"] == ["SLO TTFT P99 100 ms"]
    assert labelled["TPOT CDF"] == ["SLO TPOT P99 20 ms"]
    assert labelled["E2E CDF"] == []
    assert any(t.startswith("TTFT vs throughput") and v for t, v in labelled.items())
    assert any(t.startswith("TTFT and requests") and v for t, v in labelled.items())
    for fig in figures:
        real_close(fig)
