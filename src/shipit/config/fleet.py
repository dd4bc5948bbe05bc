"""``fleet.yaml``: a fleet of workload planes (regions, clusters or clouds) under one control plane.

Each plane is where replicas run and a gateway serves: its place on the clock (``utc_offset_h``,
which the latency model reads), its role under the posture (``active``, or ``standby`` for
active-passive), the data-residency tags it satisfies, its replica bounds and the capacity
pools it can buy from (price, obtain delay and, for spot, pre-emption rate and notice). The
top level names the posture, the latency model (``ms_per_time_zone``, about 5 ms a time zone),
the failure rate of GPUs, the global front door, the failover thresholds and the live control
plane (``control_plane``: how often demand is placed, and the spot pre-emption draw).

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

Two optional sections are read by the fleet simulator only (``shipit sim fleet``):
``traffic:`` (client regions with their place on the clock, share of the demand and residency
pin; what a replica serves; the TTFT SLO) and ``simulation:`` (its clock, scheduled plane
outages and spot shortages).

Pydantic, ``extra="forbid"``, units in names; no IO here (``load_fleet_config`` reads a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipit.config.gateway import ConfigError
from shipit.config.pools import GPU_FAILURES_PER_HOUR
from shipit.config.pools import PoolConfig as PoolConfig
from shipit.config.pools import PoolsConfig as PoolsConfig

Posture = Literal["active-active", "active-passive"]
Role = Literal["active", "standby"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    utc_offset_h: float | None = Field(
        None,
        ge=-12,
        le=14,
        description="where clients that send no region header are taken to be; default: this "
        "machine's local offset",
    )


class FailoverConfig(_Strict):
    """When a plane is out and when it is back (consecutive probes of its gateway)."""

    probe_interval_s: float = Field(1.0, gt=0)
    fail_after: int = Field(3, ge=1, description="failed probes in a row that take a plane out")
    recover_after: int = Field(2, ge=1, description="ok probes in a row that bring it back")


class ControlPlaneConfig(_Strict):
    """The live control plane next to the front door (``shipit up --fleet``): placement of the
    demand per client region onto the planes, and the planes' spot pools."""

    placement_interval_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how often demand is measured and placed, and each plane's autoscaler "
        "bounds set from it",
    )
    target_utilization: float = Field(
        0.7,
        gt=0,
        le=1,
        description="a replica carries this share of its queueing.max_concurrency when "
        "demand is counted in replicas",
    )
    admin_key_env: str | None = Field(
        None,
        min_length=1,
        description="environment variable holding an admin key of the planes' gateways, sent "
        "on the control plane's calls when the planes need keys",
    )
    spot_seed: int = Field(0, description="seed of the draw of spot pre-emptions")
    spot_check_interval_s: float = Field(
        1.0, gt=0, le=600, description="how often each plane draws its spot pre-emptions"
    )


class ClientRegionConfig(_Strict):
    """Where a share of the demand comes from (simulator): its place on the clock and pin."""

    name: str = Field(min_length=1, max_length=63)
    utc_offset_h: float = Field(0.0, ge=-12, le=14)
    share: float = Field(gt=0, description="its part of the demand (shares are normalised)")
    residency: str | None = Field(None, description="its requests stay on planes with this tag")


class ReplicaModelConfig(_Strict):
    """What one replica serves (simulator): slots and per-request token rates on a busy replica,
    or a catalog model and GPU to derive the rates from (``shipit plan perf``'s estimate)."""

    concurrency: int = Field(16, ge=1, description="requests one replica serves at once")
    prefill_tokens_per_s: float | None = Field(None, gt=0, description="per request, busy")
    decode_tokens_per_s: float | None = Field(None, gt=0, description="per request, busy")
    model: str | None = Field(None, description="catalog model id, to derive the rates")
    gpu: str | None = Field(None, description="catalog GPU id, to derive the rates")

    @model_validator(mode="after")
    def _rates_or_model(self) -> Self:
        rates = (self.prefill_tokens_per_s, self.decode_tokens_per_s)
        if None in rates and (self.model is None or self.gpu is None):
            raise ValueError(
                "give prefill_tokens_per_s and decode_tokens_per_s, or model and gpu to derive "
                f"them (got prefill {rates[0]}, decode {rates[1]}, model {self.model!r}, "
                f"gpu {self.gpu!r})"
            )
        return self


class TrafficConfig(_Strict):
    """The demand the fleet simulator plays: client regions, the replica model and the SLO."""

    regions: list[ClientRegionConfig] = Field(min_length=1)
    replica: ReplicaModelConfig
    ttft_slo_ms: float = Field(2000.0, gt=0, description="time to first token, network in")
    input_len: int = Field(1000, ge=1, description="prompt tokens (rate series; a trace's own)")
    output_len: int = Field(200, ge=1, description="output tokens (rate series; a trace's own)")
    diurnal: float = Field(
        0.0, ge=0, lt=1, description="0: flat; 0.7: a region's night falls to 30% of its day"
    )
    target_utilization: float = Field(0.7, gt=0, le=1, description="autoscaler headroom")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [r.name for r in self.regions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"traffic region names must be unique; repeated: {', '.join(dupes)}")
        return self


class WindowConfig(_Strict):
    """A scheduled event in simulated time: from ``at_h`` for ``for_h`` hours on one plane."""

    plane: str
    at_h: float = Field(ge=0)
    for_h: float = Field(gt=0)


class SimulationConfig(_Strict):
    """The fleet simulator's clock and scheduled events (live fleets ignore this section)."""

    tick_s: float = Field(10.0, gt=0, le=600, description="traffic and queueing step")
    autoscale_interval_s: float = Field(30.0, gt=0, description="in-plane autoscaler tick")
    placement_interval_s: float = Field(900.0, gt=0, description="control-plane placement")
    gpu_failure_detect_s: float = Field(60.0, ge=0, description="failure to detection")
    spot_shortage_s: float = Field(
        1800.0,
        ge=0,
        description="spot counts as short in a plane while its pre-emptions over this window "
        "reach twice what its spot replicas should see (at least one)",
    )
    queue_timeout_s: float = Field(60.0, gt=0, description="a request waits this long at most")
    outages: list[WindowConfig] = Field(default_factory=list, description="plane down")
    spot_shortages: list[WindowConfig] = Field(
        default_factory=list, description="no spot to be had in a plane"
    )


class FleetConfig(_Strict):
    posture: Posture = "active-active"
    ms_per_time_zone: float = Field(5.0, ge=0, description="latency model: per time zone apart")
    gpu_failures_per_hour: float = Field(
        GPU_FAILURES_PER_HOUR, ge=0, description="per GPU; 1 per 50,000 GPU-hours by default"
    )
    gpus_per_replica: int = Field(1, ge=1)
    front_door: FrontDoorConfig = Field(default_factory=FrontDoorConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    control_plane: ControlPlaneConfig = Field(default_factory=ControlPlaneConfig)
    planes: list[PlaneConfig] = Field(min_length=1)
    traffic: TrafficConfig | None = Field(None, description="simulator: the demand it plays")
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @model_validator(mode="after")
    def _planes(self) -> Self:
        names = [p.name for p in self.planes]
        for w in (*self.simulation.outages, *self.simulation.spot_shortages):
            if w.plane not in names:
                raise ValueError(
                    f"simulation: no plane {w.plane!r} for an outage or spot shortage; "
                    f"planes: {', '.join(names)}"
                )
        residencies = {tag for p in self.planes for tag in p.residency}
        for r in self.traffic.regions if self.traffic else ():
            if r.residency is not None and r.residency not in residencies:
                raise ValueError(
                    f"traffic region {r.name}: residency {r.residency!r} is met by no plane "
                    f"(tags: {', '.join(sorted(residencies)) or 'none'})"
                )
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
