"""Shared harness for engine tests: a recording executor and small run helpers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shipit.engine.engine import CpuExecutor, EngineConfig, LLMEngine
from shipit.engine.loader import LoadedModel
from shipit.engine.model import F32, ForwardItem
from shipit.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)


class Recorder:
    """Wraps the CPU executor and keeps each sequence's logits, in sampling order."""

    def __init__(self, engine: LLMEngine) -> None:
        assert isinstance(engine.executor, CpuExecutor)
        self.inner = engine.executor
        self.engine = engine
        self.logits: dict[str, list[F32]] = {}
        self.partial_prefills = 0  # chunks that end before the prompt does
        engine.executor = self

    def execute(self, items: Sequence[ForwardItem]) -> F32:
        out = self.inner.execute(items)
        sampled = [i.request_id for i in items if i.need_logits]
        for rid, row in zip(sampled, out, strict=True):
            self.logits.setdefault(rid, []).append(row.copy())
        self.partial_prefills += sum(not i.need_logits for i in items)
        return out


def engine_for(model: LoadedModel, **cfg: int) -> LLMEngine:
    defaults: dict[str, int] = {"block_size": 4, "kv_cache_bytes": 64 * 1024 * 1024}
    return LLMEngine.from_loaded(model, EngineConfig(**(defaults | cfg)))


def run(
    engine: LLMEngine, prompts: dict[str, list[int]], params: SamplingParams = GREEDY, **kw: str
) -> dict[str, list[int]]:
    for rid, p in prompts.items():
        engine.add_request(rid, p, params, **kw)
    out: dict[str, list[int]] = {rid: [] for rid in prompts}
    while engine.has_unfinished_requests():
        for o in engine.step():
            out.setdefault(o.request_id, []).extend(o.new_token_ids)
    return out


def prompts_of(lengths: Sequence[int], seed: int = 1) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {f"r{i}": rng.integers(10, 380, size=n).tolist() for i, n in enumerate(lengths)}
