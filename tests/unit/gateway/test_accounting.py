"""Per-request accounting: TTFT skips the role-only event, ITL per chunk gap, tokens from the
usage chunk (or the event count), goodput against the deployment's SLO, and the catalog's
series on the gateway's ``/metrics``."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipit.config.gateway import parse_config
from shipit.config.observability import SloConfig
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.accounting import Tally, usage_from_body, usage_from_sse
from shipit.gateway.app import create_gateway, running
from shipit.gateway.metrics import GatewayMetrics
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def content(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
DONE = b"data: [DONE]\n\n"


def values(metrics: GatewayMetrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            if "le" not in s.labels:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def fresh() -> GatewayMetrics:
    return GatewayMetrics({}, process=False, nvml=False)


def test_stream_with_usage_counts_tokens_ttft_itl_and_tpot() -> None:
    m = fresh()
    t = Tally(arrived_s=100.0, stream=True)
    for now_s, chunk in [(100.1, ROLE), (100.3, content("a")), (100.35, content("b"))]:
        t.chunk(chunk, now_s)
    t.chunk(content("c") + USAGE + DONE, 100.4)
    t.finish(m.per_request("chat"), now_s=100.5, status=200, chat=True, slo=None)
    v = values(m)
    assert v["shipit_time_to_first_token_seconds_sum"] == pytest.approx(0.3)
    assert v["shipit_inter_token_latency_seconds_count"] == 2  # two gaps after the first token
    assert v["shipit_inter_token_latency_seconds_sum"] == pytest.approx(0.1)
    assert v["shipit_prompt_tokens_total"] == 7 and v["shipit_output_tokens_total"] == 3
    # TPOT = (E2E 0.5 - TTFT 0.3) / (3 - 1)
    assert v["shipit_time_per_output_token_seconds_sum"] == pytest.approx(0.1)
    assert v["shipit_requests_slo_met_total"] == 1  # no SLO given: every 2xx is good


def test_stream_without_usage_counts_content_events_and_no_prompt_tokens() -> None:
    m = fresh()
    t = Tally(arrived_s=0.0, stream=True)
    t.chunk(content("a") + content("b"), 0.1)
    t.chunk(content("c") + DONE, 0.2)
    t.finish(m.per_request("c"), now_s=0.2, status=200, chat=False, slo=None)
    v = values(m)
    assert v["shipit_output_tokens_total"] == 3
    assert v.get("shipit_prompt_tokens_total", 0.0) == 0


def test_non_streamed_body_usage_and_ttft_is_e2e_for_the_slo() -> None:
    m = fresh()
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
    t = Tally(arrived_s=0.0, stream=False)
    t.chunk(body[:20].encode(), 0.1)
    t.chunk(body[20:].encode(), 0.6)
    slo = SloConfig(ttft_p99_ms=500)
    t.finish(m.per_request("c"), now_s=0.6, status=200, chat=True, slo=slo)
    v = values(m)
    assert v["shipit_prompt_tokens_total"] == 11 and v["shipit_output_tokens_total"] == 4
    assert v.get("shipit_requests_slo_met_total", 0.0) == 0  # 600 ms > 500 ms
    assert v.get("shipit_time_to_first_token_seconds_count", 0.0) == 0  # streams only


@pytest.mark.parametrize(
    ("slo", "good"),
    [
        (SloConfig(ttft_p99_ms=250), True),
        (SloConfig(ttft_p99_ms=150), False),
        (SloConfig(tpot_p99_ms=60), True),
        (SloConfig(tpot_p99_ms=40), False),
        (SloConfig(ttft_p99_ms=250, tpot_p99_ms=40), False),
    ],
)
def test_goodput_against_the_slo(slo: SloConfig, good: bool) -> None:
    m = fresh()
    t = Tally(arrived_s=0.0, stream=True)
    t.chunk(content("a"), 0.2)  # TTFT 200 ms
    t.chunk(content("b") + content("c") + DONE, 0.3)  # TPOT (0.3 - 0.2) / 2 = 50 ms
    t.finish(m.per_request("c"), now_s=0.3, status=200, chat=False, slo=slo)
    assert values(m).get("shipit_requests_slo_met_total", 0.0) == (1 if good else 0)


def test_errors_count_e2e_only() -> None:
    m = fresh()
    t = Tally(arrived_s=0.0, stream=True)
    t.chunk(b'{"error": {"message": "no"}}', 0.1)
    t.finish(m.per_request("c"), now_s=0.1, status=400, chat=False, slo=None)
    v = values(m)
    assert v["shipit_e2e_request_latency_seconds_count"] == 1
    assert v.get("shipit_requests_slo_met_total", 0.0) == 0
    assert v.get("shipit_time_to_first_token_seconds_count", 0.0) == 0


def test_usage_parsers_ignore_null_and_garbage() -> None:
    assert usage_from_sse(content("x") + USAGE) == {"prompt_tokens": 7, "completion_tokens": 3}
    assert usage_from_sse(b'data: {"usage": null}\n\n') is None
    assert usage_from_sse(b'data: {"usage":{ broken\n\n') is None
    assert usage_from_body(b"[1, 2]") is None
    assert usage_from_body(b"not json") is None


def test_gateway_metrics_expose_catalog_series_with_tokens_and_process() -> None:
    chunks = [ROLE, content("a"), content("b"), USAGE, DONE]
    cfg = parse_config(
        {"deployments": [{"model": "m", "replicas": 0, "slo": {"ttft_p99_ms": 1000}}]}
    )
    upstream = FakeUpstream({"http://a": FakeReplica(chunks=chunks)})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def go() -> str:
        async with running(gw):
            res = await call(gw, "POST", "/v1/chat/completions", body)
            assert res.status == 200
            return (await call(gw, "GET", "/metrics")).body.decode()

    text = asyncio.run(go())
    assert 'shipit_prompt_tokens_total{deployment="default"} 7.0' in text
    assert 'shipit_output_tokens_total{deployment="default"} 3.0' in text
    assert 'shipit_requests_slo_met_total{deployment="default"} 1.0' in text
    assert 'shipit_process_cpu_seconds_total{component="gateway"}' in text
    assert "shipit_process_resident_memory_bytes" in text
    assert 'shipit_time_to_first_token_seconds_bucket{deployment="default",le="0.01"}' in text
