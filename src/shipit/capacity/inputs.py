"""User-facing planner inputs: a traffic profile and latency SLOs (pydantic, ``extra="forbid"``).

These arrive from CLI flags or a YAML file, so every field says its unit and every error names
the field. Must not hold planning logic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrafficProfile(BaseModel):
    """Requests arriving at the fleet and their lengths (tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean_rps: float = Field(gt=0, description="average arrival rate, requests/s")
    peak_rps: float | None = Field(default=None, gt=0, description="peak rate; default mean")
    min_rps: float = Field(default=0.0, ge=0, description="trough rate (autoscaling floor)")
    arrival_cv: float = Field(
        default=1.0, ge=0, description="burstiness: CV of inter-arrival times (1 = Poisson)"
    )
    input_len_mean: int = Field(ge=1)
    input_len_p99: int | None = Field(default=None, ge=1)
    output_len_mean: int = Field(ge=1)
    output_len_p99: int | None = Field(default=None, ge=1)
    prefix_hit_rate: float = Field(
        default=0.0, ge=0, lt=1, description="share of prompt tokens served from prefix cache"
    )
    ramp_rps_per_s: float | None = Field(
        default=None, ge=0, description="fastest climb of the rate; default trough-to-peak in 600 s"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrafficProfile:
        if self.peak_rps is not None and self.peak_rps < self.mean_rps:
            raise ValueError(f"peak_rps {self.peak_rps} is below mean_rps {self.mean_rps}")
        if self.min_rps > self.mean_rps:
            raise ValueError(f"min_rps {self.min_rps} is above mean_rps {self.mean_rps}")
        if self.input_len_p99 is not None and self.input_len_p99 < self.input_len_mean:
            raise ValueError("input_len_p99 is below input_len_mean")
        if self.output_len_p99 is not None and self.output_len_p99 < self.output_len_mean:
            raise ValueError("output_len_p99 is below output_len_mean")
        return self

    @property
    def peak(self) -> float:
        return self.peak_rps if self.peak_rps is not None else self.mean_rps

    @property
    def input_tail(self) -> int:
        return self.input_len_p99 or self.input_len_mean

    @property
    def output_tail(self) -> int:
        return self.output_len_p99 or self.output_len_mean

    @property
    def ramp(self) -> float:
        if self.ramp_rps_per_s is not None:
            return self.ramp_rps_per_s
        return (self.peak - self.min_rps) / 600.0


class SloTargets(BaseModel):
    """Latency targets at one percentile (TTFT includes queueing; TPOT is per request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)
    percentile: float = Field(default=99.0, gt=0, lt=100)
