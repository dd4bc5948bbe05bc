"""Pure capacity math and catalogs: memory, performance model, recommender, SLO sizing, cost.

The public API, re-exported once here (``tests/unit/capacity/test_exports.py`` checks it).
Everything is a pure function over frozen records; the only IO is reading the packaged catalog
YAML (``load_catalog``) and, when asked, a local Hugging Face ``config.json``. This package must
not read clocks, open sockets, spawn processes or import CLI/rendering libraries.

``step_time_s`` is the roofline time of one engine iteration; the simulated replica uses it as
its clock.
"""

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
from shipit.capacity.queries import (
    MemorySegment,
    RecommendQuery,
    VramQuery,
    answer_recommend,
    answer_vram,
    explain_invalid,
    vram_segments,
)
from shipit.capacity.queueing import erlang_b, erlang_c, wait_exceed_probability, wait_percentile_s
from shipit.capacity.recommend import Recommendation, RecommendResult, recommend
from shipit.capacity.records import GpuSpec, ModelSpec, PriceQuote, Provider
from shipit.capacity.roofline import StepTime, iteration_time, step_time_s
from shipit.capacity.sizing import AutoscalingSettings, ReplicaPlan, cold_start_s, size_replicas

__all__ = [
    "DEFAULT_CALIBRATION",
    "KV_DTYPE_BYTES",
    "WEIGHT_DTYPES",
    "AutoscalingSettings",
    "Calibration",
    "Catalog",
    "Deployment",
    "GpuHourPrice",
    "GpuModelSpec",
    "GpuSpec",
    "MemorySegment",
    "ModelSpec",
    "ParamCounts",
    "PerfEstimate",
    "PriceQuote",
    "ProcurementPlan",
    "Provider",
    "RecommendQuery",
    "RecommendResult",
    "Recommendation",
    "ReplicaPlan",
    "SloTargets",
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
    "recommend",
    "size_replicas",
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
