"""``shipit top``'s figures from two scrapes, and its tables, without a network."""

from __future__ import annotations

from typing import Any

from prometheus_client.samples import Sample
from rich.console import Console

from shipit.cli.top_frame import Scrape, build_frame, render


def s(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, labels, value)


STATUS: dict[str, Any] = {
    "deployments": [
        {
            "name": "chat",
            "model": "m",
            "queue_depth": 3,
            "replicas": [
                {"id": "chat-0", "url": "http://a", "state": "ready", "in_flight": 2},
                {"id": "chat-1", "url": "http://b", "state": "starting", "in_flight": 0},
            ],
        }
    ],
    "alerts": [{"deployment": "chat", "metric": "ttft_p99_s", "state": "firing", "value": 0.9,
                "baseline": 0.2, "score": 7.5}],
}  # fmt: skip


def gateway(requests: float, ttft_fast: float, ttft_all: float, ups: float) -> tuple[Sample, ...]:
    ttft = "shipit_time_to_first_token_seconds_bucket"
    return (
        s("shipit_requests_total", requests, deployment="chat", status="200", policy="p"),
        s("shipit_requests_total", 2, deployment="chat", status="503", policy="p"),
        s(ttft, ttft_fast, deployment="chat", le="0.1"),
        s(ttft, ttft_all, deployment="chat", le="1.0"),
        s(ttft, ttft_all, deployment="chat", le="+Inf"),
        s("shipit_scale_events_total", ups, deployment="chat", direction="up"),
    )


def replica(hits: float, queries: float, done: float) -> tuple[Sample, ...]:
    return (
        s("vllm:kv_cache_usage_perc", 0.25, model_name="m"),
        s("vllm:num_requests_running", 2, model_name="m"),
        s("vllm:prefix_cache_hits_total", hits, model_name="m"),
        s("vllm:prefix_cache_queries_total", queries, model_name="m"),
        s("vllm:request_success_total", done, model_name="m", finished_reason="stop"),
    )


def test_rates_and_percentiles_over_the_interval() -> None:
    prev = Scrape(10.0, gateway(10, 10, 10, 1), STATUS, {"chat-0": replica(0, 100, 5)})
    cur = Scrape(12.0, gateway(30, 20, 30, 2), STATUS, {"chat-0": replica(60, 200, 9)})
    frame = build_frame("http://gw", cur, prev)
    (d,) = frame.deployments
    assert d.replicas == "1/2" and d.queue_depth == 3 and d.in_flight == 2
    assert d.stats is not None and d.stats.requests_per_s == 10.0  # 20 more 200s in 2 s
    assert d.stats.error_ratio == 0.0  # the 503s are older than the window
    # 10 of the 20 new TTFTs <= 0.1 s, the rest <= 1 s: P50 at 0.1, P99 inside (0.1, 1]
    assert d.stats.ttft_p50_s == 0.1
    assert d.stats.ttft_p99_s is not None and 0.9 < d.stats.ttft_p99_s <= 1.0
    assert (d.scale_ups, d.alerts) == (2, 1)
    r0, r1 = frame.replicas
    assert r0.kv_usage == 0.25 and r0.prefix_hit_rate == 0.6 and r0.requests_per_s == 2.0
    assert r1.kv_usage is None and r1.prefix_hit_rate is None  # not scraped


def test_first_frame_has_no_rates_and_renders() -> None:
    frame = build_frame("http://gw", Scrape(1.0, gateway(1, 1, 1, 0), STATUS), None)
    assert frame.deployments[0].stats is None
    console = Console(width=200, record=True)
    console.print(render(frame))
    text = console.export_text()
    assert "chat-0" in text and "chat-1" in text and "alerts (1)" in text and "ttft_p99_s" in text


def test_the_gateway_window_wins_over_the_scrape_interval() -> None:
    """Right after a burst, two scrapes a second apart see nothing; the gateway's window
    (``/shipit/status?window_s=10``) still does."""
    window = {
        "seconds": 10.0,
        "deployments": {
            "chat": {
                "seconds": 10.0,
                "requests_per_s": 3.0,
                "error_ratio": 0.0,
                "goodput_ratio": None,
                "output_tokens_per_s": 120.0,
                "prompt_tokens_per_s": 50.0,
            }
        },
    }
    status = {**STATUS, "window": window}
    prev = Scrape(10.0, gateway(30, 20, 30, 2), status)
    cur = Scrape(11.0, gateway(30, 20, 30, 2), status)
    frame = build_frame("http://gw", cur, prev)
    (d,) = frame.deployments
    assert d.stats is not None and d.stats.requests_per_s == 3.0
    assert frame.interval_s == 10.0
    console = Console(width=250, record=True)
    console.print(render(frame))
    assert "over the last 10s" in console.export_text()


def test_off_a_terminal_top_is_as_wide_as_its_content(monkeypatch: Any) -> None:
    from shipit.cli.top import console_for

    monkeypatch.delenv("COLUMNS", raising=False)
    assert console_for(is_terminal=False).width >= 200
    monkeypatch.setenv("COLUMNS", "132")
    assert console_for(is_terminal=False).width == 132
