"""Model-to-hardware recommendation: every GPU x TP x precision x provider, ranked by $/M tokens.

Each candidate is sized for the traffic at the SLO (``sizing``), priced at each provider's
on-demand rate, and carries its reasoning (what bounds it, why it fits). Candidates that cannot
fit or cannot meet the SLO are dropped with the reason kept in ``rejected``. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.capacity.calibration import CALIBRATED_GPUS, DEFAULT_CALIBRATION, Calibration
from shipit.capacity.catalog import Catalog
from shipit.capacity.deployment import Deployment, valid_tp_degrees
from shipit.capacity.inputs import SloTargets, TrafficProfile
from shipit.capacity.pricing import usd_per_million_tokens
from shipit.capacity.records import GpuSpec, ModelSpec
from shipit.capacity.sizing import ReplicaPlan, size_replicas
from shipit.core.errors import CapacityError

DEFAULT_DTYPES = ("bf16", "fp8", "int4-awq")


@dataclass(frozen=True, slots=True)
class Recommendation:
    gpu_id: str
    tp: int
    dtype: str
    provider: str
    region: str
    replicas: int
    gpus: int
    usd_per_hour: float
    usd_per_million_tokens: float
    price_as_of: str
    plan: ReplicaPlan
    reason: str
    # False: no published run checks the planner on this GPU (datasheet roofline only).
    calibrated: bool = True


@dataclass(frozen=True, slots=True)
class RecommendResult:
    rows: tuple[Recommendation, ...]
    rejected: tuple[str, ...]


def _dtypes(model: ModelSpec, wanted: tuple[str, ...]) -> tuple[str, ...]:
    out = [model.native_dtype] if model.native_dtype not in ("bf16", "fp16") else []
    out += [d for d in wanted if d not in out]
    return tuple(out)


def _size(d: Deployment, t: TrafficProfile, slo: SloTargets, cal: Calibration) -> ReplicaPlan | str:
    try:
        return size_replicas(d, t, slo, calibration=cal)
    except CapacityError as exc:
        return exc.message


def recommend(
    model: ModelSpec,
    catalog: Catalog,
    traffic: TrafficProfile,
    slo: SloTargets,
    *,
    providers: tuple[str, ...] = (),
    max_gpus: int | None = None,
    max_usd_per_hour: float | None = None,
    dtypes: tuple[str, ...] = DEFAULT_DTYPES,
    gpus: tuple[GpuSpec, ...] | None = None,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> RecommendResult:
    """Rank configurations by dollars per million tokens (input + output) at ``traffic``;
    ``max_gpus`` and ``max_usd_per_hour`` (the whole fleet, at peak) drop what costs more."""
    rows: list[Recommendation] = []
    rejected: list[str] = []
    tokens_per_s = traffic.mean_rps * (traffic.input_len_mean + traffic.output_len_mean)
    max_len = min(model.max_context, traffic.input_tail + traffic.output_tail)
    for gpu in gpus or catalog.gpus:
        quotes = catalog.prices_for(gpu.id, providers)
        if not quotes:
            continue
        for dtype in _dtypes(model, dtypes):
            for tp in valid_tp_degrees(model, gpu):
                d = Deployment(model=model, gpu=gpu, tp=tp, dtype=dtype, max_model_len=max_len)
                plan = _size(d, traffic, slo, calibration)
                if isinstance(plan, str):
                    rejected.append(plan)
                    continue
                if max_gpus is not None and plan.gpus_peak > max_gpus:
                    rejected.append(f"{d.label()}: needs {plan.gpus_peak} GPUs > {max_gpus}")
                    continue
                for q in quotes:
                    per_hour = plan.gpus_peak * q.usd_per_gpu_hour
                    if max_usd_per_hour is not None and per_hour > max_usd_per_hour:
                        rejected.append(
                            f"{d.label()} at {q.provider}: ${per_hour:,.2f}/h > "
                            f"${max_usd_per_hour:,.2f}/h budget"
                        )
                        continue
                    rows.append(
                        Recommendation(
                            gpu_id=gpu.id,
                            tp=tp,
                            dtype=d.weights.id,
                            provider=q.provider,
                            region=q.region,
                            replicas=plan.replicas_peak,
                            gpus=plan.gpus_peak,
                            usd_per_hour=per_hour,
                            usd_per_million_tokens=usd_per_million_tokens(per_hour, tokens_per_s),
                            price_as_of=q.as_of,
                            plan=plan,
                            reason=_why(d, plan, q.usd_per_gpu_hour, q.provider),
                            calibrated=gpu.id in CALIBRATED_GPUS,
                        )
                    )
    rows.sort(key=lambda r: (r.usd_per_million_tokens, r.gpus))
    return RecommendResult(rows=tuple(rows), rejected=tuple(rejected))


def _why(d: Deployment, plan: ReplicaPlan, price: float, provider: str) -> str:
    q = "" if d.weights.id in ("bf16", "fp16") else "; quantised: check quality on your evals"
    if d.gpu.id not in CALIBRATED_GPUS:
        q += "; uncalibrated GPU: datasheet roofline only, likely optimistic"
    return (
        f"{plan.replicas_peak} x TP{d.tp} = {plan.gpus_peak} GPUs at ${price:.2f}/GPU-h "
        f"({provider}); {plan.concurrency_per_replica} seqs/replica, decode {plan.bound}-bound, "
        f"TPOT p{plan.percentile:g} "
        f"{plan.tpot_tail_ms:.1f} ms, TTFT {plan.ttft_tail_ms + plan.queue_wait_tail_ms:.0f} ms "
        f"incl. queueing{q}"
    )
