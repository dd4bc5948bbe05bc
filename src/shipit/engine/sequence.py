"""A request's life inside the engine: its tokens, its place in the KV cache, its status.

``Sequence`` is the one mutable record the scheduler and the block manager share; both
are pure bookkeeping over it. Sampling, detokenisation and stop strings live with the
engine, not here. No IO and no clock: arrival order is a counter the engine assigns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shipit.engine.sampling import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the model's context length
    ABORT = "abort"  # the client went away or the server aborted it


@dataclass(eq=False, slots=True)
class Sequence:
    seq_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    arrival_index: int
    priority: int = 0  # lower values are served first, as in vLLM
    lora_name: str | None = None
    cache_salt: str | None = None
    output_token_ids: list[int] = field(default_factory=list)
    # Tokens whose K/V are in the cache (or were found in the prefix cache).
    num_computed_tokens: int = 0
    # Of those, how many came from the prefix cache on the latest admission.
    num_cached_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    # Chained hashes of the full blocks of ``all_token_ids`` computed so far (lazy).
    block_hashes: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_slice(self, start: int, stop: int) -> list[int]:
        """Tokens ``[start, stop)`` of prompt + output, without building the whole list."""
        n_prompt = len(self.prompt_token_ids)
        if stop <= n_prompt:
            return self.prompt_token_ids[start:stop]
        if start >= n_prompt:
            return self.output_token_ids[start - n_prompt : stop - n_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - n_prompt]

    @property
    def sort_key(self) -> tuple[int, int]:
        """Priority first, then arrival: the order in which the scheduler serves."""
        return (self.priority, self.arrival_index)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
