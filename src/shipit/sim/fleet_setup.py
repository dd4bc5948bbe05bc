"""The fleet simulator's setup: the fleet, the service model, the demand and the run's length.

``fleet_setup`` builds it from ``fleet.yaml``'s ``traffic:`` section and a rate curve (the CLI
reads the curve from a trace or a rate series). Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.config.fleet import FleetConfig
from shipit.core.errors import InvalidRequestError
from shipit.sim.fleet_exact import TraceArrival
from shipit.sim.fleet_model import DemandModel, RegionShape, ServiceModel, normalise_regions


@dataclass(frozen=True, slots=True)
class FleetSimSetup:
    fleet: FleetConfig
    service: ServiceModel
    demand: DemandModel
    hours: float
    ttft_slo_s: float
    target_utilization: float = 0.7
    seed: int = 0
    sample_s: float = 300.0  # resolution of the time series
    # Request-exact traffic (``sim.fleet_exact``): these requests at their own times instead
    # of Poisson draws from the rate curve; empty: the fluid model.
    requests: tuple[TraceArrival, ...] = ()


def fleet_setup(
    fleet: FleetConfig,
    *,
    rates_rps: tuple[float, ...],
    step_s: float,
    hours: float,
    seed: int = 0,
    input_len: float | None = None,
    output_len: float | None = None,
    prefill_tokens_per_s: float | None = None,
    decode_tokens_per_s: float | None = None,
    service_cv2: float = 0.0,
    sample_s: float = 300.0,
    requests: tuple[TraceArrival, ...] = (),
) -> FleetSimSetup:
    """The simulator's setup from ``fleet.yaml``'s ``traffic:`` section and a rate curve;
    lengths default to the section's (``service_cv2``, the spread of the requests' service
    times, to 0: all alike), token rates to its replica's (the CLI derives them
    from a catalog model and GPU when the section names those instead)."""
    t = fleet.traffic
    if t is None:
        raise InvalidRequestError(
            "the fleet config has no traffic: section; the simulator needs client regions "
            "(name, utc_offset_h, share) and the replica model (see docs/fleet.md)",
            field="traffic",
        )
    if hours <= 0:
        raise InvalidRequestError(f"hours={hours} must be > 0", field="hours")
    if not rates_rps or min(rates_rps) < 0 or step_s <= 0:
        raise InvalidRequestError(
            "the demand needs at least one step, no negative rate and a step > 0", field="rates"
        )
    prefill = prefill_tokens_per_s or t.replica.prefill_tokens_per_s
    decode = decode_tokens_per_s or t.replica.decode_tokens_per_s
    if prefill is None or decode is None:
        raise InvalidRequestError(
            "traffic.replica names a model and GPU: derive prefill and decode token rates "
            "from them first (shipit sim fleet does)",
            field="traffic.replica",
        )
    if service_cv2 < 0:
        raise InvalidRequestError(
            f"service_cv2={service_cv2} must be >= 0 (0: every request takes the same time)",
            field="service_cv2",
        )
    service = ServiceModel(
        t.replica.concurrency,
        prefill,
        decode,
        float(input_len if input_len is not None else t.input_len),
        float(output_len if output_len is not None else t.output_len),
        service_cv2,
    )
    regions = normalise_regions(
        [RegionShape(r.name, r.utc_offset_h, r.share, r.residency) for r in t.regions]
    )
    return FleetSimSetup(
        fleet=fleet,
        service=service,
        demand=DemandModel(tuple(rates_rps), step_s, regions, t.diurnal),
        hours=hours,
        ttft_slo_s=t.ttft_slo_ms / 1000.0,
        target_utilization=t.target_utilization,
        seed=seed,
        sample_s=sample_s,
        requests=requests,
    )
