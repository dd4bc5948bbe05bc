"""The planner's questions as typed inputs, answered once for the CLI and the web console.

``shipit plan vram`` / ``plan recommend`` and the console's JSON API (``/ui/api/vram``,
``/ui/api/recommend``) both build a ``VramQuery`` or ``RecommendQuery`` from what the user gave
(flags, a query string, a JSON body) and call ``answer_vram`` / ``answer_recommend``, so the two
can never disagree: every default, every check and every figure is here or below. The queries
are pydantic with ``extra="forbid"`` (a misspelt field is named); resolving the model (catalog
id, local file, pasted ``config.json``) stays with the caller. Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipit.capacity.catalog import Catalog
from shipit.capacity.deployment import Deployment
from shipit.capacity.inputs import SloTargets, TrafficProfile
from shipit.capacity.memory import VramPlan, plan_vram
from shipit.capacity.recommend import DEFAULT_DTYPES, RecommendResult, recommend
from shipit.capacity.records import ModelSpec
from shipit.core.errors import InvalidRequestError


class VramQuery(BaseModel):
    """One replica's memory question: the vLLM flags that decide it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str = Field(min_length=1, description="GPU id or alias, e.g. h100-sxm, H100, l4")
    tp: int = Field(default=1, ge=1, le=64, description="tensor-parallel degree")
    dtype: str | None = Field(default=None, description="weight format; default: native")
    kv_dtype: str = Field(default="auto", description="KV cache dtype: auto, bf16, fp8")
    max_model_len: int | None = Field(default=None, ge=1, description="context limit, tokens")
    max_num_seqs: int = Field(default=256, ge=1, description="sequences batched at once")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="tokens per step")
    gpu_memory_utilization: float = Field(default=0.9, description="vLLM's memory budget share")
    context: int | None = Field(
        default=None, ge=1, description="tokens per sequence for the concurrency figure"
    )


def answer_vram(catalog: Catalog, model: ModelSpec, q: VramQuery) -> tuple[Deployment, VramPlan]:
    """The deployment ``q`` describes and its memory plan (suggestions from every GPU)."""
    d = Deployment(
        model=model,
        gpu=catalog.gpu(q.gpu),
        tp=q.tp,
        dtype=q.dtype or None,
        kv_dtype=q.kv_dtype,
        max_model_len=q.max_model_len,
        max_num_seqs=q.max_num_seqs,
        max_num_batched_tokens=q.max_num_batched_tokens,
        gpu_memory_utilization=q.gpu_memory_utilization,
    )
    return d, plan_vram(d, context_tokens=q.context, other_gpus=catalog.gpus)


@dataclass(frozen=True, slots=True)
class MemorySegment:
    """One part of a GPU's memory, per GPU, for a stacked bar."""

    name: str
    bytes: float


def vram_segments(p: VramPlan) -> tuple[MemorySegment, ...]:
    """Where one GPU's memory goes, adding up to its total: weights, activation peak,
    overheads (CUDA context, NCCL, CUDA graphs), the KV pool, and what lies outside the
    ``gpu_memory_utilization`` budget. When the fixed parts overrun the budget the KV pool is
    zero and the overrun eats into the reserve (``free`` shrinks, possibly to zero)."""
    overhead = p.non_torch_bytes + p.cuda_graph_bytes
    used = p.weight_bytes + p.activation_peak_bytes + overhead + p.kv_pool_bytes
    return (
        MemorySegment("weights", p.weight_bytes),
        MemorySegment("activations", p.activation_peak_bytes),
        MemorySegment("overhead", overhead),
        MemorySegment("kv_cache", p.kv_pool_bytes),
        MemorySegment("free", max(p.gpu_total_bytes - used, 0.0)),
    )


class RecommendQuery(BaseModel):
    """Traffic, SLO and budget for the model-to-hardware ranking."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float | None = Field(default=None, gt=0, description="mean requests/s")
    throughput: float | None = Field(default=None, gt=0, description="output tokens/s")
    input_len: int = Field(ge=1, description="mean prompt tokens")
    output_len: int = Field(ge=1, description="mean output tokens")
    input_len_p99: int | None = Field(default=None, ge=1)
    output_len_p99: int | None = Field(default=None, ge=1)
    ttft_p99_ms: float = Field(gt=0, description="TTFT SLO incl. queueing")
    tpot_p99_ms: float = Field(gt=0, description="TPOT SLO")
    providers: tuple[str, ...] = Field(default=(), description="aws, gcp, lambda, runpod")
    max_gpus: int | None = Field(default=None, ge=1, description="most GPUs in total")
    max_usd_per_hour: float | None = Field(default=None, gt=0, description="budget, $/hour")
    dtypes: tuple[str, ...] = Field(default=DEFAULT_DTYPES, min_length=1)

    @model_validator(mode="after")
    def _one_rate(self) -> RecommendQuery:
        if (self.rps is None) == (self.throughput is None):
            raise ValueError("give exactly one of rps (requests/s) or throughput (output tokens/s)")
        return self

    @property
    def mean_rps(self) -> float:
        return self.rps if self.rps is not None else (self.throughput or 0.0) / self.output_len

    def traffic(self) -> TrafficProfile:
        return TrafficProfile(
            mean_rps=self.mean_rps,
            input_len_mean=self.input_len,
            output_len_mean=self.output_len,
            input_len_p99=self.input_len_p99,
            output_len_p99=self.output_len_p99,
        )

    def slo(self) -> SloTargets:
        return SloTargets(ttft_ms=self.ttft_p99_ms, tpot_ms=self.tpot_p99_ms, percentile=99.0)


def answer_recommend(catalog: Catalog, model: ModelSpec, q: RecommendQuery) -> RecommendResult:
    """Every GPU x TP x precision x provider for ``q``, cheapest per million tokens first."""
    return recommend(
        model,
        catalog,
        q.traffic(),
        q.slo(),
        providers=q.providers,
        max_gpus=q.max_gpus,
        max_usd_per_hour=q.max_usd_per_hour,
        dtypes=q.dtypes,
    )


def explain_invalid(exc: ValidationError) -> InvalidRequestError:
    """A planner input pydantic refused, as one message: each field, what is wrong and the
    value given (``tp: Input should be greater than or equal to 1 (got 0)``)."""
    parts: list[str] = []
    first: str | None = None
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        first = first or field or None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling"
        elif field and "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        parts.append(f"{field}: {msg}" if field else msg)
    return InvalidRequestError("; ".join(parts), field=first)
