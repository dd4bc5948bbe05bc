"""Replica timing on a simulated accelerator: the one place a step's duration is computed.

Owns ``ReplicaModel`` (one simulated replica: accelerator, model, tensor parallelism, the
engine's scheduler settings, cold start), ``StepShape`` (what one engine step asks of the
accelerator: its prefill chunks and their context, its decode batch and their context) and
``roofline_step_time`` (the capacity planner's roofline, ``capacity.iteration_time``, as a
memoised ``StepShape -> seconds`` function). Both the ``--simulate`` replica's executor
(``engine.simulated``) and the fleet simulator (``sim``) time their steps here, with the same
shape buckets, so the two cannot drift apart. Pure: no clock, no IO beyond reading the packaged
catalogs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from shipit.capacity import (
    DEFAULT_CALIBRATION,
    Calibration,
    Deployment,
    VramPlan,
    iteration_time,
    load_catalog,
    plan_vram,
)
from shipit.engine.engine import EngineConfig
from shipit.engine.model import ForwardItem
from shipit.engine.model_files import resolve_model

# Step times are memoised per 16 tokens of mean context: the roofline changes by well under
# 1% across 16 tokens, and the memo then stays small over a long simulation.
CONTEXT_BUCKET_TOKENS = 16
_MEMO_MAX = 100_000


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one engine step asks of the accelerator."""

    prefill_tokens: int
    prefill_seqs: int
    prefill_context_tokens: int  # mean keys a prefill token attends to
    decode_seqs: int
    decode_context_tokens: int  # mean tokens in a decoding sequence's KV cache

    @classmethod
    def of(cls, items: Sequence[ForwardItem]) -> StepShape:
        """The shape of the step the engine hands its executor."""
        return cls.of_spans((item.start_pos, len(item.token_ids)) for item in items)

    @classmethod
    def of_spans(cls, spans: Iterable[tuple[int, int]]) -> StepShape:
        """The shape of a step running ``(start_pos, num_tokens)`` per sequence: a span of
        one token decodes; a longer one is a prefill chunk."""
        p_tokens = p_seqs = p_ctx = d_seqs = d_ctx = 0
        for start, n in spans:
            if n == 1:
                d_seqs += 1
                d_ctx += start
            else:
                p_seqs += 1
                p_tokens += n
                p_ctx += start + n // 2
        b = CONTEXT_BUCKET_TOKENS
        return cls(
            prefill_tokens=p_tokens,
            prefill_seqs=p_seqs,
            prefill_context_tokens=(p_ctx // p_seqs) // b * b if p_seqs else 0,
            decode_seqs=d_seqs,
            decode_context_tokens=(d_ctx // d_seqs) // b * b if d_seqs else 0,
        )

    @classmethod
    def of_decodes(cls, num_seqs: int, total_context_tokens: int) -> StepShape:
        """The shape of a decode-only step of ``num_seqs`` sequences whose KV caches hold
        ``total_context_tokens`` together (``of_spans`` of their one-token spans)."""
        b = CONTEXT_BUCKET_TOKENS
        mean = (total_context_tokens // num_seqs) // b * b if num_seqs else 0
        return cls(0, 0, 0, num_seqs, mean)


StepTimeModel = Callable[[StepShape], float]


def decode_step_ends(
    step_time: StepTimeModel,
    *,
    start_s: float,
    num_seqs: int,
    total_context_tokens: int,
    steps: int,
) -> list[float]:
    """When each of ``steps`` consecutive decode-only steps of ``num_seqs`` sequences ends
    (every sequence's context grows by one token a step). The same times, summed in the same
    order, as timing the steps one by one; the step-time function is asked once per context
    bucket instead of once per step."""
    ends: list[float] = []
    t, i, b = start_s, 0, CONTEXT_BUCKET_TOKENS
    mean = total_context_tokens // num_seqs  # grows by exactly one a step
    while i < steps:
        same = min(steps - i, b - (mean + i) % b)  # steps left in this context bucket
        duration_s = step_time(StepShape.of_decodes(num_seqs, total_context_tokens + i * num_seqs))
        for _ in range(same):
            t += duration_s
            ends.append(t)
        i += same
    return ends


def roofline_step_time(
    deployment: Deployment, calibration: Calibration = DEFAULT_CALIBRATION
) -> StepTimeModel:
    """The planner's roofline as a step-time model, memoised per step shape."""
    memo: dict[StepShape, float] = {}

    def step_time_s(shape: StepShape) -> float:
        cached = memo.get(shape)
        if cached is None:
            cached = iteration_time(
                deployment,
                prefill_tokens=shape.prefill_tokens,
                prefill_seqs=shape.prefill_seqs,
                prefill_context_tokens=shape.prefill_context_tokens,
                decode_seqs=shape.decode_seqs,
                context_tokens=shape.decode_context_tokens,
                calibration=calibration,
            ).total_s
            if len(memo) < _MEMO_MAX:
                memo[shape] = cached
        return cached

    return step_time_s


@dataclass(frozen=True, slots=True)
class ReplicaModel:
    """One simulated replica: ``gpu`` and ``model`` name entries of the planner's catalogs;
    ``engine`` holds the scheduler's settings (token budget per step, batch size, KV block
    size; the engine's own defaults unless given); ``cold_start_s`` is start to ready."""

    gpu: str = "H100"
    model: str = "llama-3.1-8b"
    tp: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    cold_start_s: float = 30.0

    def deployment(self) -> Deployment:
        """The planner's record of this replica (what the roofline and VRAM plan read)."""
        catalog = load_catalog()
        return Deployment(
            model=resolve_model(catalog, self.model),
            gpu=catalog.gpu(self.gpu),
            tp=self.tp,
            max_model_len=self.engine.max_model_len,
            max_num_seqs=self.engine.max_num_seqs,
            max_num_batched_tokens=self.engine.max_num_batched_tokens,
        )

    def resolve(self, calibration: Calibration = DEFAULT_CALIBRATION) -> ReplicaTiming:
        """Everything a simulated replica of this model needs, computed once."""
        d = self.deployment()
        plan = plan_vram(d, calibration=calibration)
        blocks = plan.kv_pool_tokens // self.engine.block_size if plan.fits else 0
        return ReplicaTiming(self, d, plan, blocks, roofline_step_time(d, calibration))


@dataclass(frozen=True, slots=True)
class ReplicaTiming:
    """A ``ReplicaModel`` resolved against the catalogs: its planner record, its VRAM plan, the
    KV blocks its cache holds (0 when the model does not fit) and its step-time function."""

    model: ReplicaModel
    deployment: Deployment
    plan: VramPlan
    num_kv_blocks: int
    step_time: StepTimeModel

    @property
    def max_model_len(self) -> int:
        """The engine's context cap: the configured or the model's limit, within the cache."""
        context = self.deployment.context_limit
        cached = self.num_kv_blocks * self.model.engine.block_size
        return min(self.model.engine.max_model_len or context, context, cached)
