"""The user-facing settings of one bench run, validated once, saved into every result file.

Owns the pydantic models (``extra="forbid"``, units in names) and the parsing of the compact
strings the CLI accepts (``--slo ttft_p99_ms=500,tpot_p99_ms=50``). Must not do IO; the API key
is kept out of every dump so result files can be shared.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipit.core.errors import InvalidRequestError

_SLO_KEY = re.compile(r"^(ttft|tpot|e2e)(?:_p(50|90|99))?_ms$")


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    model: str
    endpoint: Literal["chat", "completions"] = "chat"
    # How requests travel: sse (HTTP, streamed), http (HTTP, one JSON answer), ws (/v1/ws),
    # grpc (the gateway's --grpc-port; url is host:port).
    protocol: Literal["sse", "http", "ws", "grpc"] = "sse"
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    ignore_eos: bool = False
    timeout_s: float = Field(default=600.0, gt=0)
    # tokenizer.json (or a directory holding one) to count output tokens when the server
    # sends no usage; without it, streamed content chunks are counted.
    tokenizer: str | None = None

    def endpoint_url(self) -> str:
        """The full URL to POST to; accepts a bare base URL, one ending in /v1, or a full path."""
        url = self.url.rstrip("/")
        if url.endswith("/completions"):
            return url
        path = "/chat/completions" if self.endpoint == "chat" else "/completions"
        return url + path if url.endswith("/v1") else url + "/v1" + path


class WorkloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: str = "128"
    output_tokens: str = "128"
    prefix_groups: int = Field(default=0, ge=0)
    prefix_tokens: int = Field(default=0, ge=0)
    turns: int = Field(default=1, ge=1)
    think_time_s: float = Field(default=0.0, ge=0)
    lora_mix: str = ""
    sharegpt_path: str | None = None
    trace_path: str | None = None
    trace_speed: float = Field(default=1.0, gt=0)


class LoadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_requests: int = Field(default=100, ge=1)
    warmup_requests: int = Field(default=1, ge=0)  # sent first, not measured
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0)
    rates_rps: tuple[float, ...] = ()
    concurrencies: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _one_mode(self) -> LoadConfig:
        if self.rates_rps and self.concurrencies:
            raise ValueError("give --rate or --concurrency, not both")
        if any(r <= 0 for r in self.rates_rps) or any(c < 1 for c in self.concurrencies):
            raise ValueError("rates must be > 0 and concurrencies >= 1")
        return self

    def points(self) -> list[tuple[str, float]]:
        """The load points to run in order: ("rate", r) or ("concurrency", c); default c=1."""
        if self.rates_rps:
            return [("rate", r) for r in self.rates_rps]
        return [("concurrency", float(c)) for c in self.concurrencies or (1,)]


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: TargetConfig
    workload: WorkloadConfig = WorkloadConfig()
    load: LoadConfig = LoadConfig()
    slo_ms: dict[str, float] = Field(default_factory=dict)
    seed: int = 0

    @model_validator(mode="after")
    def _slo_keys(self) -> BenchConfig:
        for key, value in self.slo_ms.items():
            if not _SLO_KEY.match(key) or value <= 0:
                raise ValueError(
                    f"SLO {key}={value} is not understood; use ttft|tpot|e2e, an optional "
                    "_p50/_p90/_p99, and _ms, with a value > 0 (e.g. ttft_p99_ms=500)"
                )
        if self.workload.trace_path and (self.load.rates_rps or self.load.concurrencies):
            raise ValueError("a trace sets its own arrival times; drop --rate/--concurrency")
        return self


def parse_slo(text: str) -> dict[str, float]:
    """``"ttft_p99_ms=500,tpot_p99_ms=50"`` -> {"ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0}."""
    slo: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not _SLO_KEY.match(key) or number <= 0:
            raise InvalidRequestError(
                f"SLO entry {part!r} is not METRIC=MS; metrics are ttft|tpot|e2e with an "
                "optional _p50/_p90/_p99 and _ms, e.g. --slo ttft_p99_ms=500,tpot_p99_ms=50",
                field="slo",
            )
        slo[key] = number
    return slo


def slo_parts(key: str) -> tuple[str, int | None]:
    """``"ttft_p99_ms"`` -> ("ttft", 99); ``"e2e_ms"`` -> ("e2e", None)."""
    match = _SLO_KEY.match(key)
    if match is None:
        raise InvalidRequestError(f"SLO key {key!r} is not understood", field="slo")
    return match.group(1), int(match.group(2)) if match.group(2) else None


def parse_number_list(text: str, *, field: str) -> tuple[float, ...]:
    """``"1,2,4"`` -> (1.0, 2.0, 4.0), for sweeps; one number is a single point."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:
        raise InvalidRequestError(
            f"--{field.replace('_', '-')} {text!r} is not a number or a comma-separated list "
            "(e.g. 1,2,4 for a sweep)",
            field=field,
        )
    return values
