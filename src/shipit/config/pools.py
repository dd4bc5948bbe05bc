"""Capacity pools of a workload plane (reserved, on demand, spot), and a live plane's section.

``PoolsConfig`` is what a plane of ``fleet.yaml`` may buy from: price per GPU-hour, obtain
delay, supply limit and, for spot, pre-emption rate and notice. ``LivePlaneConfig`` is the
``plane:`` section ``shipit up --fleet`` writes into each plane's own ``shipit.yaml``: its name,
its pools, how its spot pre-emptions are drawn, and its GPUs' failure rate (the fleet file's
``gpu_failures_per_hour``). Pydantic, ``extra="forbid"``; no IO.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

GPU_FAILURES_PER_HOUR = 1 / 50_000  # about one per 50,000 GPU-hours at large training scale


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Strict):
    """One way a plane buys accelerators."""

    usd_per_gpu_hour: float = Field(ge=0, description="price of one GPU-hour in this pool")
    obtain_delay_s: float = Field(0.0, ge=0, description="request to serving: boot + model load")
    max_replicas: int | None = Field(None, ge=0, description="most the pool supplies at once")
    preemptions_per_hour: float = Field(0.0, ge=0, description="per replica; spot only")
    notice_s: float = Field(0.0, ge=0, description="warning before a pre-emption; spot only")


class PoolsConfig(_Strict):
    """The pools a plane may use; a pool left out is not sold there."""

    reserved: PoolConfig | None = None
    on_demand: PoolConfig | None = None
    spot: PoolConfig | None = None

    @model_validator(mode="after")
    def _risk_only_on_spot(self) -> Self:
        for name in ("reserved", "on_demand"):
            pool = getattr(self, name)
            if pool is not None and (pool.preemptions_per_hour or pool.notice_s):
                raise ValueError(
                    f"{name}: preemptions_per_hour and notice_s apply to spot only "
                    f"(got {pool.preemptions_per_hour}, {pool.notice_s}); set them under spot"
                )
        return self


class LivePlaneConfig(_Strict):
    """A plane of a live fleet, as its gateway runs it (written by ``shipit up --fleet`` from
    the fleet file; not meant to be written by hand)."""

    name: str = Field(min_length=1)
    pools: PoolsConfig = Field(
        default_factory=lambda: PoolsConfig(on_demand=PoolConfig(usd_per_gpu_hour=4.0))
    )
    gpus_per_replica: int = Field(1, ge=1)
    gpu_failures_per_hour: float = Field(
        GPU_FAILURES_PER_HOUR, ge=0, description="per GPU; 1 per 50,000 GPU-hours by default"
    )
    spot_seed: int = 0
    spot_check_interval_s: float = Field(1.0, gt=0, le=600)
    spot_shortage_s: float = Field(
        1800.0,
        ge=0,
        description="spot counts as short while the pre-emptions over this window reach twice "
        "what the plane's spot replicas should see (at least one)",
    )
