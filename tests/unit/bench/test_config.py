"""Settings: URL forms, SLO strings, sweep lists and the errors a user sees."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipit.bench.config import (
    BenchConfig,
    LoadConfig,
    TargetConfig,
    WorkloadConfig,
    parse_number_list,
    parse_slo,
    slo_parts,
)
from shipit.core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("url", "endpoint", "full"),
    [
        ("http://h:8000", "chat", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", "chat", "http://h:8000/v1/chat/completions"),
        ("http://h/v1", "completions", "http://h/v1/completions"),
        ("http://h/x/v1/chat/completions", "chat", "http://h/x/v1/chat/completions"),
    ],
)
def test_endpoint_url(url: str, endpoint: str, full: str) -> None:
    assert TargetConfig(url=url, model="m", endpoint=endpoint).endpoint_url() == full  # type: ignore[arg-type]


def test_slo_strings() -> None:
    assert parse_slo("ttft_p99_ms=500, tpot_p99_ms=50") == {"ttft_p99_ms": 500, "tpot_p99_ms": 50}
    assert parse_slo("") == {}
    assert slo_parts("e2e_ms") == ("e2e", None) and slo_parts("ttft_p90_ms") == ("ttft", 90)
    for bad in ("ttft=5", "ttft_p95_ms=5", "tpot_p99_ms=-1", "itl_ms=3"):
        with pytest.raises(InvalidRequestError, match="ttft_p99_ms=500") as err:
            parse_slo(bad)
        assert err.value.field == "slo"


def test_sweeps_and_modes() -> None:
    assert parse_number_list("1, 2,4", field="rate") == (1.0, 2.0, 4.0)
    with pytest.raises(InvalidRequestError, match="--rate"):
        parse_number_list("fast", field="rate")
    assert LoadConfig().points() == [("concurrency", 1.0)]
    assert LoadConfig(rates_rps=(1, 2)).points() == [("rate", 1.0), ("rate", 2.0)]
    with pytest.raises(ValidationError, match="not both"):
        LoadConfig(rates_rps=(1,), concurrencies=(2,))


def test_config_rejects_unknown_fields_and_hides_the_key() -> None:
    with pytest.raises(ValidationError):
        WorkloadConfig(prompt_tokens=5)  # type: ignore[call-arg]
    cfg = BenchConfig(target=TargetConfig(url="u", model="m", api_key="secret"))
    assert "secret" not in cfg.model_dump_json() and "secret" not in repr(cfg)
    with pytest.raises(ValidationError, match="trace sets its own"):
        BenchConfig(
            target=cfg.target,
            workload=WorkloadConfig(trace_path="t.csv"),
            load=LoadConfig(rates_rps=(1,)),
        )
