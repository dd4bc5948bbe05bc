"""Continuous batching at token level: which sequences run in the next step, and how many
tokens of each.

Every step the scheduler spends a token budget (``max_num_batched_tokens``): first on the
running sequences, in priority-then-arrival order (one token for a decoding sequence, a
chunk of the remaining prompt for one still prefilling), then on waiting sequences, which
join the running batch between steps. A long prompt is split into chunks across steps, so
decoding sequences keep producing tokens while it prefills.

When the KV cache has no block left for a running sequence, the least important running
sequence (lowest priority, latest arrival) is preempted: its blocks are freed and it goes
back to the waiting queue to be recomputed later (its prompt and the tokens it already
produced become its new prefill; the prefix cache often makes that cheap).

Pure bookkeeping over ``Sequence`` and ``BlockManager``: no model, no clock, no IO.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from shipit.engine.block_manager import BlockManager
from shipit.engine.sequence import FinishReason, Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    # Waiting requests beyond this are refused by the engine (a server maps it to 429).
    max_waiting: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "max_waiting"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """``num_tokens`` tokens of ``seq`` starting at position ``start_pos``."""

    seq: Sequence
    start_pos: int
    num_tokens: int

    @property
    def completes_sequence(self) -> bool:
        """True when this chunk reaches the last known token: a new token is sampled."""
        return self.start_pos + self.num_tokens == self.seq.num_tokens


@dataclass(slots=True)
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.blocks = block_manager
        # Both kept sorted by Sequence.sort_key.
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # ----- queue management ------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        bisect.insort(self.waiting, seq, key=lambda s: s.sort_key)

    def abort(self, seq: Sequence) -> bool:
        """Remove ``seq`` wherever it is and free its blocks. False if it was not here."""
        for queue in (self.running, self.waiting):
            if seq in queue:
                queue.remove(seq)
                self._finish(seq, FinishReason.ABORT)
                return True
        return False

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """A running sequence is done (EOS, stop string, length)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        self.blocks.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ----- one step ----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_running(out, budget)
        if not out.preempted:
            self._schedule_waiting(out, budget)
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            # The victim is always the last running sequence: it sorts after every
            # sequence scheduled so far, so nothing already in this step is preempted.
            while not self.blocks.allocate(seq, num_new):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
            else:
                out.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, num_new))
                budget -= num_new
                i += 1
                continue
            break  # seq itself was preempted: everyone after it was too
        return budget

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.num_cached_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        out.preempted.append(seq)
        self.add(seq)

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            cached = self.blocks.match_prefix(seq)
            num_cached_tokens = len(cached) * self.blocks.block_size
            num_new = min(seq.num_tokens - num_cached_tokens, budget)
            if not self.blocks.allocate(seq, num_new, cached):
                # Undo the query count: the same request asks again next step.
                self.blocks.prefix_cache_queries -= seq.num_tokens
                self.blocks.prefix_cache_hits -= num_cached_tokens
                break
            self.waiting.pop(0)
            seq.num_computed_tokens = num_cached_tokens
            seq.num_cached_tokens = num_cached_tokens
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=lambda s: s.sort_key)
            out.chunks.append(ScheduledChunk(seq, num_cached_tokens, num_new))
            budget -= num_new

    def commit(self, out: SchedulerOutput) -> None:
        """The step ran: the scheduled tokens are now in the KV cache."""
        for chunk in out.chunks:
            seq = chunk.seq
            if seq.is_finished:
                continue
            seq.num_computed_tokens = chunk.start_pos + chunk.num_tokens
            self.blocks.cache_full_blocks(seq)
