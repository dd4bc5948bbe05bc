"""Autoscaling settings of one deployment, as users write them in ``shipit.yaml``.

Validated with pydantic (``extra="forbid"``); every error names the field and the allowed
values. The autoscaling policy reads this model; nothing here decides anything.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AutoscalingConfig(BaseModel):
    """Defaults follow Knative (60 s stable window, 6 s panic window, panic at 2x) and
    Ray Serve (a per-replica concurrency target); the scale-down delay is shorter than Ray's
    600 s because an idle CPU replica costs little and tests should finish."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "concurrency_target" in data:
            raise ValueError(
                "autoscaling.concurrency_target was renamed target_concurrency (what the "
                "autoscaler aims for per replica); the gateway's per-replica cap is "
                "queueing.max_concurrency"
            )
        return data

    min_replicas: int = Field(1, ge=0, description="0 enables scale to zero.")
    max_replicas: int = Field(4, ge=1)
    target_concurrency: float = Field(
        8.0, gt=0, description="In-flight + queued requests one replica should carry."
    )
    target_utilization: float = Field(
        0.7, gt=0, le=1, description="Fraction of target_concurrency to aim for (headroom)."
    )
    prefill_utilization: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="Fraction of a replica's time its prompts' prefill should take: the fleet "
        "is at least the prefill seconds arriving a second / this (long prompts queue behind "
        "each other's prefill); null turns the rule off. The gateway counts each arrival's "
        "prefill: its prompt tokens x the replicas' measured prefill time a token (the "
        "simulator: the prompt alone on an idle replica, from the step-time model).",
    )
    autoscaling_window_s: float = Field(60.0, gt=0, description="Stable averaging window.")
    panic_window_s: float = Field(
        6.0,
        gt=0,
        description="Short window that catches bursts; when absent, a tenth of "
        "autoscaling_window_s (Knative's panic-window percentage).",
    )
    panic_threshold: float = Field(
        2.0,
        gt=1,
        description="Enter panic when the short-window need is this many times "
        "the ready replicas; in panic the policy scales up fast and never down.",
    )
    scale_up_delay_s: float = Field(0.0, ge=0, description="A higher target must hold this long.")
    scale_down_delay_s: float = Field(
        120.0, ge=0, description="A lower target must hold this long before scaling down."
    )
    max_scale_up_rate: float = Field(
        4.0, gt=1, description="At most this many times the current replicas per decision."
    )
    max_scale_down_rate: float = Field(
        2.0, gt=1, description="At most current / this many replicas removed per decision."
    )
    idle_timeout_s: float = Field(
        300.0, ge=0, description="With min_replicas 0: no traffic for this long scales to zero."
    )
    cold_start_s: float = Field(
        30.0,
        ge=0,
        description="Expected start-to-ready time of a replica: a scale-up is skipped when "
        "the replicas it starts would be ready only after the backlog drained anyway.",
    )
    ttft_slo_s: float | None = Field(
        None,
        gt=0,
        description="P99 time-to-first-token target, seconds. When set, the per-replica "
        "target is lowered while more than 1 % of requests miss it inside the replicas "
        "(long prompts queue behind each other's prefill), and raised back while they keep it.",
    )
    startup_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A replica not ready after this long is replaced; when absent, the "
        "deployment's startup_timeout_s.",
    )
    tick_interval_s: float = Field(
        1.0, gt=0, description="How often the live autoscaler samples load and decides."
    )
    decisions_kept: int = Field(
        50, ge=1, description="Scale decisions kept (with reasons) for `shipit status`."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "panic_window_s" not in self.model_fields_set:
            # Derived, not given: stays out of model_fields_set, so a later override of the
            # stable window (a flag over the file) derives it again.
            object.__setattr__(self, "panic_window_s", self.autoscaling_window_s / 10)
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        if self.panic_window_s > self.autoscaling_window_s:
            raise ValueError(
                f"panic_window_s ({self.panic_window_s}) must be <= autoscaling_window_s "
                f"({self.autoscaling_window_s})"
            )
        return self
