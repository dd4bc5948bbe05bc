"""Pure capacity math and catalogs: memory, performance, recommender, SLO sizing, cost, procurement.

The public API, re-exported once here (``tests/unit/capacity/test_exports.py`` checks it).
Everything is a pure function over frozen records; the only IO is reading the packaged catalog
YAML (``load_catalog``) and, when asked, a local Hugging Face ``config.json``. This package must
not read clocks, open sockets, spawn processes or import CLI/rendering libraries.

``step_time_s`` is the roofline time of one engine iteration; the simulated replica uses it as
its clock.

Submodules are imported when a name is first used (``__getattr__`` below), so code that needs
only the model records (the embedded engine) does not pay for the catalogs, pydantic inputs
and planners at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipit.capacity.architecture import (
        ParamCounts,
        kv_bytes_for_context,
        kv_bytes_per_token,
        param_counts,
        total_params,
        weight_bytes,
    )
    from shipit.capacity.calibration import DEFAULT_CALIBRATION, Calibration
    from shipit.capacity.catalog import Catalog, load_catalog
    from shipit.capacity.cost import ProcurementPlan, TokenCost, procurement_mix, token_cost
    from shipit.capacity.deployment import (
        Deployment,
        GpuModelSpec,
        parse_gpu_model,
        valid_tp_degrees,
    )
    from shipit.capacity.dtypes import KV_DTYPE_BYTES, WEIGHT_DTYPES, WeightDtype, weight_dtype
    from shipit.capacity.hf_config import model_from_hf_config
    from shipit.capacity.inputs import SloTargets, TrafficProfile
    from shipit.capacity.memory import VramPlan, activation_peak_bytes, plan_vram
    from shipit.capacity.perf import (
        PerfEstimate,
        best_throughput_for_gpus,
        estimate_perf,
        max_concurrency,
    )
    from shipit.capacity.pricing import (
        GpuHourPrice,
        cheapest_quote,
        gpu_hour_price,
        usd_per_million_tokens,
    )
    from shipit.capacity.procurement import (
        DemandCurve,
        Pools,
        PoolSpec,
        ProcurementComparison,
        ProcurementOutcome,
        SpotRisk,
        compare_procurement,
        spot_risk,
    )
    from shipit.capacity.procurement_demand import (
        demand_curve,
        rates_from_timestamps,
        repeat_to_days,
    )
    from shipit.capacity.queries import (
        MemorySegment,
        RecommendQuery,
        VramQuery,
        answer_recommend,
        answer_vram,
        explain_invalid,
        vram_segments,
    )
    from shipit.capacity.queueing import (
        erlang_b,
        erlang_c,
        wait_exceed_probability,
        wait_percentile_s,
    )
    from shipit.capacity.recommend import Recommendation, RecommendResult, recommend
    from shipit.capacity.records import GpuSpec, ModelSpec, PriceQuote, Provider
    from shipit.capacity.roofline import StepTime, iteration_time, step_time_s
    from shipit.capacity.sizing import AutoscalingSettings, ReplicaPlan, cold_start_s, size_replicas

# name -> the submodule that defines it
_WHERE: dict[str, str] = {
    "AutoscalingSettings": "shipit.capacity.sizing",
    "Calibration": "shipit.capacity.calibration",
    "Catalog": "shipit.capacity.catalog",
    "DEFAULT_CALIBRATION": "shipit.capacity.calibration",
    "DemandCurve": "shipit.capacity.procurement",
    "Deployment": "shipit.capacity.deployment",
    "GpuHourPrice": "shipit.capacity.pricing",
    "GpuModelSpec": "shipit.capacity.deployment",
    "GpuSpec": "shipit.capacity.records",
    "KV_DTYPE_BYTES": "shipit.capacity.dtypes",
    "MemorySegment": "shipit.capacity.queries",
    "ModelSpec": "shipit.capacity.records",
    "ParamCounts": "shipit.capacity.architecture",
    "PerfEstimate": "shipit.capacity.perf",
    "PoolSpec": "shipit.capacity.procurement",
    "Pools": "shipit.capacity.procurement",
    "PriceQuote": "shipit.capacity.records",
    "ProcurementComparison": "shipit.capacity.procurement",
    "ProcurementOutcome": "shipit.capacity.procurement",
    "ProcurementPlan": "shipit.capacity.cost",
    "Provider": "shipit.capacity.records",
    "RecommendQuery": "shipit.capacity.queries",
    "RecommendResult": "shipit.capacity.recommend",
    "Recommendation": "shipit.capacity.recommend",
    "ReplicaPlan": "shipit.capacity.sizing",
    "SloTargets": "shipit.capacity.inputs",
    "SpotRisk": "shipit.capacity.procurement",
    "StepTime": "shipit.capacity.roofline",
    "TokenCost": "shipit.capacity.cost",
    "TrafficProfile": "shipit.capacity.inputs",
    "VramPlan": "shipit.capacity.memory",
    "VramQuery": "shipit.capacity.queries",
    "WEIGHT_DTYPES": "shipit.capacity.dtypes",
    "WeightDtype": "shipit.capacity.dtypes",
    "activation_peak_bytes": "shipit.capacity.memory",
    "answer_recommend": "shipit.capacity.queries",
    "answer_vram": "shipit.capacity.queries",
    "best_throughput_for_gpus": "shipit.capacity.perf",
    "cheapest_quote": "shipit.capacity.pricing",
    "cold_start_s": "shipit.capacity.sizing",
    "compare_procurement": "shipit.capacity.procurement",
    "demand_curve": "shipit.capacity.procurement_demand",
    "erlang_b": "shipit.capacity.queueing",
    "erlang_c": "shipit.capacity.queueing",
    "estimate_perf": "shipit.capacity.perf",
    "explain_invalid": "shipit.capacity.queries",
    "gpu_hour_price": "shipit.capacity.pricing",
    "iteration_time": "shipit.capacity.roofline",
    "kv_bytes_for_context": "shipit.capacity.architecture",
    "kv_bytes_per_token": "shipit.capacity.architecture",
    "load_catalog": "shipit.capacity.catalog",
    "max_concurrency": "shipit.capacity.perf",
    "model_from_hf_config": "shipit.capacity.hf_config",
    "param_counts": "shipit.capacity.architecture",
    "parse_gpu_model": "shipit.capacity.deployment",
    "plan_vram": "shipit.capacity.memory",
    "procurement_mix": "shipit.capacity.cost",
    "rates_from_timestamps": "shipit.capacity.procurement_demand",
    "recommend": "shipit.capacity.recommend",
    "repeat_to_days": "shipit.capacity.procurement_demand",
    "size_replicas": "shipit.capacity.sizing",
    "spot_risk": "shipit.capacity.procurement",
    "step_time_s": "shipit.capacity.roofline",
    "token_cost": "shipit.capacity.cost",
    "total_params": "shipit.capacity.architecture",
    "usd_per_million_tokens": "shipit.capacity.pricing",
    "valid_tp_degrees": "shipit.capacity.deployment",
    "vram_segments": "shipit.capacity.queries",
    "wait_exceed_probability": "shipit.capacity.queueing",
    "wait_percentile_s": "shipit.capacity.queueing",
    "weight_bytes": "shipit.capacity.architecture",
    "weight_dtype": "shipit.capacity.dtypes",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'shipit.capacity' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "DEFAULT_CALIBRATION",
    "KV_DTYPE_BYTES",
    "WEIGHT_DTYPES",
    "AutoscalingSettings",
    "Calibration",
    "Catalog",
    "DemandCurve",
    "Deployment",
    "GpuHourPrice",
    "GpuModelSpec",
    "GpuSpec",
    "MemorySegment",
    "ModelSpec",
    "ParamCounts",
    "PerfEstimate",
    "PoolSpec",
    "Pools",
    "PriceQuote",
    "ProcurementComparison",
    "ProcurementOutcome",
    "ProcurementPlan",
    "Provider",
    "RecommendQuery",
    "RecommendResult",
    "Recommendation",
    "ReplicaPlan",
    "SloTargets",
    "SpotRisk",
    "StepTime",
    "TokenCost",
    "TrafficProfile",
    "VramPlan",
    "VramQuery",
    "WeightDtype",
    "activation_peak_bytes",
    "answer_recommend",
    "answer_vram",
    "best_throughput_for_gpus",
    "cheapest_quote",
    "cold_start_s",
    "compare_procurement",
    "demand_curve",
    "erlang_b",
    "erlang_c",
    "estimate_perf",
    "explain_invalid",
    "gpu_hour_price",
    "iteration_time",
    "kv_bytes_for_context",
    "kv_bytes_per_token",
    "load_catalog",
    "max_concurrency",
    "model_from_hf_config",
    "param_counts",
    "parse_gpu_model",
    "plan_vram",
    "procurement_mix",
    "rates_from_timestamps",
    "recommend",
    "repeat_to_days",
    "size_replicas",
    "spot_risk",
    "step_time_s",
    "token_cost",
    "total_params",
    "usd_per_million_tokens",
    "valid_tp_degrees",
    "vram_segments",
    "wait_exceed_probability",
    "wait_percentile_s",
    "weight_bytes",
    "weight_dtype",
]
