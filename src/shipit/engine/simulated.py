"""A simulated accelerator for the engine: the real scheduler, block manager and sampler, with
the numpy model replaced by an executor that waits the step time a GPU would take.

``--simulate GPU:MODEL[:tpN]`` (e.g. ``H100:llama-3.1-70b:tp4``) resolves both names in the
capacity planner's catalogs, sizes the KV cache with the planner's VRAM plan (vLLM's budget:
``memory * utilization - weights - activation peak - non-torch - CUDA graphs``) and times
every step with ``engine.sim_timing`` (the planner's roofline over the step's prefill tokens and
their context, its decode batch and mean context, weights streamed once per step: the same
function the fleet simulator times its replicas with).
The executor ``time.sleep``s that long in the engine's thread, then returns logits whose
argmax is a chosen token, over a small vocabulary, so the per-step Python cost stays tiny.

Simplifications, stated: the tokenizer is a word-hashing one (one token per whitespace-
separated word, ids from a hash, so equal text gives equal ids and prefix caching behaves);
generated tokens are never EOS, so every request runs to ``max_tokens``. The host's work between
two steps (scheduling, sampling, streaming) runs while the previous step's modelled time
passes, as on an engine that schedules asynchronously (vLLM's async scheduling): a step starts
when the previous one ends if the host called it within the previous step's time, and when the
host calls it otherwise (it was idle, or slower than the accelerator); so a replica keeps the
modelled pace while its host keeps up, and sleeping late in one step is made up in the next.
This module must not open sockets; its only clock use is the injected ``clock`` and ``sleep``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tokenizers

from shipit.capacity import DEFAULT_CALIBRATION, Calibration, Deployment, parse_gpu_model
from shipit.core.errors import InvalidRequestError
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.model import F32, ForwardItem
from shipit.engine.model_config import ModelConfig
from shipit.engine.sim_timing import (
    ReplicaModel,
    ReplicaTiming,
    StepShape,
    StepTimeModel,
    roofline_step_time,
)
from shipit.engine.tokenizer import Tokenizer, not_text

SIM_VOCAB_SIZE = 1024
_FIRST_WORD_ID = 3  # 0 <unk>, 1 <|im_start|>, 2 <|im_end|> (EOS)
_EOS_ID = 2
_CHOSEN_LOGIT = 30.0  # e^-30 * vocab: the chosen token wins even when sampling at T=2
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class SimulatedExecutor:
    """Implements the engine's ``Executor``: waits until the modelled step ends, then returns
    one logit row per item that needs one, peaked at a non-EOS token.

    The accelerator's timeline: a step starts at the previous step's end when the host came
    back within the previous step's time (its work overlapped that step), else when the host
    calls; it ends ``step_time`` later, and ``execute`` sleeps until then."""

    def __init__(
        self,
        step_time: StepTimeModel,
        *,
        vocab_size: int = SIM_VOCAB_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if vocab_size <= _FIRST_WORD_ID:
            raise ValueError(f"vocab_size must be > {_FIRST_WORD_ID}, got {vocab_size}")
        self.step_time = step_time
        self.vocab_size = vocab_size
        self.sleep = sleep
        self.clock = clock
        self.num_steps = 0
        self.busy_s = 0.0  # modelled accelerator time, summed
        self.hidden_s = 0.0  # host time between steps that ran under the previous step
        self._ends_at: float | None = None  # the previous step's modelled end
        self._last_s = 0.0  # the previous step's modelled time
        self._returned_at = 0.0  # when the previous ``execute`` returned

    def next_token(self, item: ForwardItem) -> int:
        """A deterministic, non-special token for the position after ``item``."""
        position = item.start_pos + len(item.token_ids)
        span = self.vocab_size - _FIRST_WORD_ID
        return _FIRST_WORD_ID + (position * 2654435761 + len(item.request_id)) % span

    def execute(self, items: Sequence[ForwardItem]) -> F32:
        duration_s = self.step_time(StepShape.of(items))
        self.num_steps += 1
        self.busy_s += duration_s
        wanted = [item for item in items if item.need_logits]
        logits = np.zeros((len(wanted), self.vocab_size), dtype=np.float32)
        for row, item in enumerate(wanted):
            logits[row, self.next_token(item)] = _CHOSEN_LOGIT
        now = self.clock()
        start = now
        if self._ends_at is not None and now - self._returned_at <= self._last_s:
            start = min(self._ends_at, now)  # the host's work ran under the previous step
            self.hidden_s += now - start
        self._ends_at = start + duration_s
        self._last_s = duration_s
        wait_s = self._ends_at - self.clock()
        if wait_s > 0:
            self.sleep(wait_s)
        self._returned_at = self.clock()
        return logits


class SimTokenizer(Tokenizer):
    """One token per whitespace-separated word, its id a hash of the word: equal text gives
    equal ids (so prefix caching and routing behave), at ~1 µs per word."""

    def __init__(self, vocab_size: int = SIM_VOCAB_SIZE) -> None:
        inner = tokenizers.Tokenizer(
            tokenizers.models.WordLevel(
                {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": _EOS_ID}, unk_token="<unk>"
            )
        )
        super().__init__(
            inner, chat_template=CHATML_TEMPLATE, bos_token_id=1, eos_token_ids=(_EOS_ID,)
        )
        self._size = vocab_size
        self._words = ["<unk>", "<|im_start|>", "<|im_end|>"] + [
            f" w{i}" for i in range(_FIRST_WORD_ID, vocab_size)
        ]

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        span = self._size - _FIRST_WORD_ID
        try:
            return [
                _FIRST_WORD_ID
                + int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big") % span
                for w in text.split()
            ]
        except UnicodeEncodeError as exc:  # a lone surrogate is not text
            raise not_text(text) from exc

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        words = self._words
        return "".join(words[i] for i in ids if not (skip_special_tokens and i < _FIRST_WORD_ID))

    def token_to_id(self, token: str) -> int | None:
        return self._words.index(token) if token in self._words else None


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    gpu: str
    model: str
    tp: int = 1

    @classmethod
    def parse(cls, spec: str) -> SimulationSpec:
        """``GPU:MODEL[:tpN]``, e.g. ``H100:llama-3.1-70b:tp4`` (``capacity.parse_gpu_model``)."""
        names = parse_gpu_model(spec, flag="--simulate")
        return cls(gpu=names.gpu, model=names.model, tp=names.tp)


def replica_model(spec: SimulationSpec, config: EngineConfig) -> ReplicaModel:
    """The timing module's record of the replica ``spec`` names, on ``config``'s scheduler."""
    return ReplicaModel(gpu=spec.gpu, model=spec.model, tp=spec.tp, engine=config)


def simulated_deployment(spec: SimulationSpec, config: EngineConfig) -> Deployment:
    return replica_model(spec, config).deployment()


def build_simulated_engine(
    spec: str,
    config: EngineConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> LLMEngine:
    """An engine whose KV cache holds what ``spec``'s GPU holds for that model, timed by the
    planner's roofline. ``config.kv_cache_bytes`` is ignored (the VRAM plan decides)."""
    timing = replica_model(SimulationSpec.parse(spec), config).resolve(calibration)
    d, plan, num_blocks = timing.deployment, timing.plan, timing.num_kv_blocks
    if num_blocks < 1:
        hint = ("; try: " + "; ".join(plan.suggestions)) if plan.suggestions else ""
        raise InvalidRequestError(
            f"--simulate {spec}: {d.label()} does not fit: {plan.reason}{hint}", field="simulate"
        )
    m = d.model
    model_config = ModelConfig(
        vocab_size=SIM_VOCAB_SIZE,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        num_kv_heads=m.num_kv_heads,
        head_dim=m.head_dim,
        max_position_embeddings=m.max_context,
        bos_token_id=1,
        eos_token_ids=(_EOS_ID,),
    )
    executor = SimulatedExecutor(timing.step_time, sleep=sleep, clock=clock)
    return LLMEngine(model_config, SimTokenizer(), executor, config=config, num_blocks=num_blocks)


__all__ = [
    "SIM_VOCAB_SIZE",
    "ReplicaModel",
    "ReplicaTiming",
    "SimTokenizer",
    "SimulatedExecutor",
    "SimulationSpec",
    "StepShape",
    "StepTimeModel",
    "build_simulated_engine",
    "replica_model",
    "roofline_step_time",
    "simulated_deployment",
]
