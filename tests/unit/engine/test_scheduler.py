"""Scheduler: continuous batching, chunked prefill, priority then FIFO, preemption, abort.

A fake step stands in for the model: every chunk that reaches a sequence's last token
"samples" token 1. No model, no clock.
"""

from __future__ import annotations

from shipit.engine.block_manager import BlockManager
from shipit.engine.sampling import SamplingParams
from shipit.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from shipit.engine.sequence import FinishReason, Sequence, SequenceStatus

BS = 4


def make(num_blocks: int = 64, **cfg: int) -> Scheduler:
    return Scheduler(SchedulerConfig(**cfg), BlockManager(num_blocks, BS))


def seq(n_prompt: int, i: int, *, priority: int = 0, first: int = 0) -> Sequence:
    tokens = [first + 10 * i + t for t in range(n_prompt)]
    return Sequence(f"s{i}", tokens, SamplingParams(max_tokens=100), i, priority=priority)


def fake_step(s: Scheduler) -> SchedulerOutput:
    out = s.schedule()
    s.commit(out)
    for chunk in out.chunks:
        if chunk.completes_sequence:
            chunk.seq.output_token_ids.append(1)
    return out


def plan(out: SchedulerOutput) -> list[tuple[str, int]]:
    return [(c.seq.seq_id, c.num_tokens) for c in out.chunks]


def test_new_requests_join_the_running_batch_between_steps() -> None:
    s = make(max_num_batched_tokens=64)
    s.add(seq(5, 0))
    assert plan(fake_step(s)) == [("s0", 5)]
    s.add(seq(3, 1))
    assert plan(fake_step(s)) == [("s0", 1), ("s1", 3)]
    assert plan(fake_step(s)) == [("s0", 1), ("s1", 1)]


def test_long_prompt_is_chunked_while_others_keep_decoding() -> None:
    s = make(max_num_batched_tokens=8)
    s.add(seq(2, 0))
    fake_step(s)
    s.add(seq(20, 1))
    steps = [plan(fake_step(s)) for _ in range(4)]
    assert steps == [
        [("s0", 1), ("s1", 7)],
        [("s0", 1), ("s1", 7)],
        [("s0", 1), ("s1", 6)],
        [("s0", 1), ("s1", 1)],
    ]
    # Only the chunk that finished the prompt sampled a token.
    assert s.running[1].output_token_ids == [1, 1]


def test_priority_then_fifo_decides_who_is_admitted() -> None:
    s = make(max_num_seqs=2, max_num_batched_tokens=100)
    s.add(seq(2, 0, priority=1))
    s.add(seq(2, 1, priority=0))
    s.add(seq(2, 2, priority=1))
    s.add(seq(2, 3, priority=0))
    assert [c.seq.seq_id for c in fake_step(s).chunks] == ["s1", "s3"]
    s.finish(s.running[0], FinishReason.STOP)
    fake_step(s)
    assert [q.seq_id for q in s.running] == ["s3", "s0"]
    assert [q.seq_id for q in s.waiting] == ["s2"]


def test_out_of_blocks_preempts_the_least_important_and_recomputes_it() -> None:
    # 6 blocks of 4 tokens. Two sequences of 8 tokens take 2 blocks each (+1 each to decode).
    s = make(num_blocks=6, max_num_batched_tokens=64)
    a, b = seq(8, 0), seq(8, 1)
    s.add(a)
    s.add(b)
    fake_step(s)  # prefill both: 4 blocks used, each now has 9 tokens
    fake_step(s)  # decode: each needs a 3rd block -> 6 used
    for _ in range(3):
        fake_step(s)  # 12 tokens each: fills the 3rd blocks
    out = fake_step(s)  # a needs a 4th block: none free, b (later arrival) is preempted
    assert [p.seq_id for p in out.preempted] == ["s1"]
    assert plan(out) == [("s0", 1)]
    assert b.status is SequenceStatus.WAITING
    assert b.num_computed_tokens == 0 and b.block_table == [] and b.num_preemptions == 1
    assert s.num_preemptions == 1
    # When a finishes, b is readmitted and recomputes prompt + outputs so far.
    s.finish(a, FinishReason.LENGTH)
    out = s.schedule()
    chunk = out.chunks[0]
    assert chunk.seq is b
    # Its first 8 tokens are still in the prefix cache: only the rest is recomputed.
    assert (chunk.start_pos, chunk.num_tokens) == (8, 5)
    assert chunk.completes_sequence


def test_preemption_spares_higher_priority_sequences() -> None:
    s = make(num_blocks=4, max_num_batched_tokens=64)
    low, high = seq(8, 0, priority=5), seq(8, 1, priority=0)
    s.add(low)
    s.add(high)
    fake_step(s)  # 8 prompt tokens each: 2 full blocks each
    out = fake_step(s)  # both need a 3rd block: low priority goes
    assert [p.seq_id for p in out.preempted] == ["s0"]
    assert plan(out) == [("s1", 1)]


def test_abort_frees_blocks_wherever_the_sequence_is() -> None:
    s = make(max_num_seqs=1)
    a, b = seq(6, 0), seq(6, 1)
    s.add(a)
    s.add(b)
    fake_step(s)
    used = s.blocks.usage().num_used_blocks
    assert used == 2
    assert s.abort(a) and s.abort(b)
    assert a.finish_reason is FinishReason.ABORT
    assert s.blocks.usage().num_used_blocks == 0
    assert not s.has_work()
    assert not s.abort(a)


def test_waiting_requests_do_not_overrun_the_token_budget() -> None:
    s = make(max_num_batched_tokens=10)
    for i in range(3):
        s.add(seq(6, i))
    assert plan(fake_step(s)) == [("s0", 6), ("s1", 4)]
    assert plan(fake_step(s)) == [("s0", 1), ("s1", 2), ("s2", 6)]
