"""Efficiency constants that turn datasheet peaks into achieved rates, with where they came from.

One frozen record, ``Calibration``, passed (defaulted) into every performance and memory
function so a benchmark can refit it without monkey-patching. The defaults were fitted by hand
to the published runs in ``benchmarks/planner_accuracy.py`` (see docs/capacity.md). Must hold
numbers only: no formulas and no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.capacity.records import GIB


@dataclass(frozen=True, slots=True)
class Calibration:
    """Achieved fractions of peak and fixed costs.

    - ``bandwidth_efficiency``: achieved / peak HBM bandwidth in memory-bound decode
      (published runs show 0.45-0.9).
    - ``compute_efficiency``: achieved / peak dense tensor FLOP/s in compute-bound steps (MFU).
    - ``allreduce_latency_s``: fixed cost of one all-reduce (two per layer under TP).
    - ``interconnect_efficiency``: achieved / peak link bandwidth for all-reduce payloads.
    - ``step_overhead_s``: scheduler, sampling and launch cost per engine iteration.
    - memory constants follow vLLM's profiler: non-torch memory (CUDA context, NCCL, cuBLAS
      workspaces), CUDA-graph pools and the per-token activation multiplier.
    """

    bandwidth_efficiency: float = 0.60
    compute_efficiency: float = 0.50
    allreduce_latency_s: float = 12e-6
    interconnect_efficiency: float = 0.7
    step_overhead_s: float = 0.6e-3
    non_torch_bytes: float = 0.5 * GIB
    non_torch_per_extra_rank_bytes: float = 0.25 * GIB
    cuda_graph_bytes: float = 0.5 * GIB
    sampler_logit_copies: float = 2.0
    kv_block_tokens: int = 16
    weight_load_bytes_s: float = 2.0e9
    engine_start_s: float = 45.0


DEFAULT_CALIBRATION = Calibration()

# The GPUs whose published runs the defaults were fitted and checked against
# (``benchmarks/planner_accuracy.py``). Figures for any other GPU are the datasheet roofline
# with these constants: unchecked, and usually optimistic.
CALIBRATED_GPUS = frozenset({"h100-sxm", "h200", "b200"})
