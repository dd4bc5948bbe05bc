"""``fleet.yaml``: a fleet of workload planes (regions, clusters or clouds) under one control plane.

Each plane is where replicas run and a gateway serves: its place on the clock (``utc_offset_h``,
which the latency model reads), its role under the posture (``active``, or ``standby`` for
active-passive), the data-residency tags it satisfies, its replica bounds and the capacity
pools it can buy from (price, obtain delay and, for spot, pre-emption rate and notice). The
top level names the posture, the latency model (``ms_per_time_zone``, about 5 ms a time zone),
the failure rate of GPUs, the global front door and the failover thresholds.

Example::

    fleet:
      posture: active-active
      ms_per_time_zone: 5
      planes:
        - name: us-east
          utc_offset_h: -5
          residency: [us]
          max_replicas: 200
          pools:
            reserved: {usd_per_gpu_hour: 2.1, max_replicas: 80}
            on_demand: {usd_per_gpu_hour: 3.9, obtain_delay_s: 300}
            spot: {usd_per_gpu_hour: 1.4, obtain_delay_s: 600, preemptions_per_hour: 0.02,
                   notice_s: 120}
        - name: eu-west
          utc_offset_h: 1
          residency: [eu]

Pydantic, ``extra="forbid"``, units in names; no IO here (``load_fleet_config`` reads a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipit.config.gateway import ConfigError

Posture = Literal["active-active", "active-passive"]
Role = Literal["active", "standby"]

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


class PlaneConfig(_Strict):
    """One workload plane: a region, cluster or cloud with its own gateway and replicas."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    utc_offset_h: float = Field(0.0, ge=-12, le=14, description="where it is on the clock")
    role: Role = "active"
    residency: list[str] = Field(default_factory=list, description="data-residency tags it meets")
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1000, ge=0)
    pools: PoolsConfig = Field(
        default_factory=lambda: PoolsConfig(on_demand=PoolConfig(usd_per_gpu_hour=4.0))
    )
    port: int | None = Field(None, ge=0, le=65535, description="live: its gateway's port")
    gateway: dict[str, Any] | None = Field(
        None, description="live: the plane's own shipit.yaml (gateway and deployments)"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"plane {self.name}: min_replicas={self.min_replicas} is above "
                f"max_replicas={self.max_replicas}"
            )
        if self.pools.reserved is None and self.pools.on_demand is None and self.pools.spot is None:
            raise ValueError(f"plane {self.name}: pools names no pool; give at least one")
        return self


class FrontDoorConfig(_Strict):
    """The global front door live fleets put in front of the planes' gateways."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)


class FailoverConfig(_Strict):
    """When a plane is out and when it is back (consecutive probes of its gateway)."""

    probe_interval_s: float = Field(1.0, gt=0)
    fail_after: int = Field(3, ge=1, description="failed probes in a row that take a plane out")
    recover_after: int = Field(2, ge=1, description="ok probes in a row that bring it back")


class FleetConfig(_Strict):
    posture: Posture = "active-active"
    ms_per_time_zone: float = Field(5.0, ge=0, description="latency model: per time zone apart")
    gpu_failures_per_hour: float = Field(
        GPU_FAILURES_PER_HOUR, ge=0, description="per GPU; 1 per 50,000 GPU-hours by default"
    )
    gpus_per_replica: int = Field(1, ge=1)
    front_door: FrontDoorConfig = Field(default_factory=FrontDoorConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    planes: list[PlaneConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _planes(self) -> Self:
        names = [p.name for p in self.planes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"plane names must be unique; repeated: {', '.join(dupes)}")
        active = [p.name for p in self.planes if p.role == "active"]
        standby = [p.name for p in self.planes if p.role == "standby"]
        if not active:
            raise ValueError("no plane has role: active; at least one must serve")
        if standby and self.posture == "active-active":
            raise ValueError(
                f"standby planes ({', '.join(standby)}) need posture: active-passive; under "
                "active-active every plane serves (drop role: standby, or change the posture)"
            )
        if self.posture == "active-passive" and not standby:
            raise ValueError(
                "posture active-passive needs a plane with role: standby to promote on failure"
            )
        return self

    def plane(self, name: str) -> PlaneConfig:
        for p in self.planes:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.planes)
        raise KeyError(f"no plane {name!r}; planes: {known}")


class FleetFile(_Strict):
    fleet: FleetConfig


def parse_fleet_config(data: object, *, source: str = "fleet config") -> FleetConfig:
    """The ``fleet:`` document, validated; every problem named with its path."""
    if not isinstance(data, dict) or "fleet" not in data:
        raise ConfigError(
            f"{source}: expected a mapping with a top-level 'fleet:' key", field="fleet"
        )
    try:
        return FleetFile.model_validate(data).fleet
    except ValidationError as exc:
        lines, first = [], None
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            first = first or loc
            msg = err["msg"]
            if err["type"] == "literal_error":
                msg = f"{msg} (got {err.get('input')!r})"
            elif err["type"] == "extra_forbidden":
                msg = "unknown field; check the spelling against docs/fleet.md"
            lines.append(f"  {loc}: {msg}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines), field=first) from None


def load_fleet_config(path: str | Path) -> FleetConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read fleet config {p}: {exc.strerror or exc}", field="fleet"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", field="fleet") from None
    return parse_fleet_config(data, source=str(p))
