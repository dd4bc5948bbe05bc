"""One replica's engine in simulated time: the engine's own scheduler and block manager, timed
by the same step-time function as a ``--simulate`` replica.

``SimReplica`` holds an ``engine.scheduler.Scheduler`` over an ``engine.block_manager.
BlockManager`` sized by the planner's VRAM plan, exactly as ``engine.simulated`` builds them, so
a step batches what the live engine would batch: a token budget of ``max_num_batched_tokens``,
one token for each decoding sequence, the rest in prefill chunks, in priority-then-arrival
order, with preemption when the KV cache runs out. ``start_step`` schedules one step and returns
its duration (``engine.sim_timing``); ``finish_step`` commits it and says which requests got
their first token or finished. The fleet simulator owns the clock and calls these two in turn.

Simplifications, stated: every generated token is a length-limited one (no EOS), as on a
``--simulate`` replica; prompts carry no content (a request's tokens are unique to it), so the
prefix cache could never hit and is off, which changes no scheduling decision. No clock, no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.core.errors import CapacityError, ContextLengthError
from shipit.engine.block_manager import BlockManager
from shipit.engine.sampling import SamplingParams
from shipit.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from shipit.engine.sequence import FinishReason, Sequence
from shipit.engine.sim_timing import ReplicaTiming, StepShape


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """What one step produced for one request."""

    request_id: str
    output_tokens: int  # produced so far
    finished: bool


class SimReplica:
    def __init__(self, timing: ReplicaTiming) -> None:
        cfg = timing.model.engine
        self.timing = timing
        self.step_time = timing.step_time
        self.blocks = BlockManager(
            timing.num_kv_blocks, cfg.block_size, enable_prefix_caching=False
        )
        self.max_model_len = timing.max_model_len
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=cfg.max_num_seqs,
                max_num_batched_tokens=cfg.max_num_batched_tokens,
                max_model_len=self.max_model_len,
                max_waiting=cfg.max_waiting,
            ),
            self.blocks,
        )
        self._seqs: dict[str, Sequence] = {}
        self._arrivals = 0
        self._step: SchedulerOutput | None = None
        self.num_steps = 0
        self.busy_s = 0.0  # modelled accelerator time, summed

    # ----- requests --------------------------------------------------------------------
    def add(self, request_id: str, prompt_tokens: int, max_tokens: int, priority: int = 0) -> None:
        """Queue a request; raises as the engine's ``add_request`` would (too long, never fits,
        waiting queue full)."""
        if prompt_tokens >= self.max_model_len:
            raise ContextLengthError(prompt_tokens=prompt_tokens, max_model_len=self.max_model_len)
        self.blocks.check_fits(min(prompt_tokens + max_tokens, self.max_model_len))
        if len(self.scheduler.waiting) >= self.scheduler.config.max_waiting:
            raise CapacityError(
                f"the waiting queue is full ({self.scheduler.config.max_waiting} requests)",
                field="max_waiting",
            )
        # Unique content: the arrival index leads, so no two prompts share a block.
        tokens = [self._arrivals, *([0] * (prompt_tokens - 1))]
        params = SamplingParams(max_tokens=max_tokens, temperature=0)
        seq = Sequence(request_id, tokens, params, self._arrivals, priority=priority)
        self._arrivals += 1
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> bool:
        seq = self._seqs.pop(request_id, None)
        return seq is not None and self.scheduler.abort(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    @property
    def running(self) -> int:
        return len(self.scheduler.running)

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def kv_usage(self) -> float:
        return 1.0 - self.blocks.num_free_blocks / self.blocks.num_blocks

    # ----- one step --------------------------------------------------------------------
    def start_step(self) -> float | None:
        """Schedule the next step; its modelled duration, or None when nothing can run."""
        if self._step is not None:
            raise RuntimeError("a step is already running")
        out = self.scheduler.schedule()
        if not out.chunks:
            return None
        self._step = out
        duration_s = self.step_time(
            StepShape.of_spans((c.start_pos, c.num_tokens) for c in out.chunks)
        )
        self.num_steps += 1
        self.busy_s += duration_s
        return duration_s

    def finish_step(self) -> list[TokenEvent]:
        """The step ran: commit it; a token for every sequence whose chunk reached its end."""
        out, self._step = self._step, None
        if out is None:
            return []
        self.scheduler.commit(out)
        events = []
        for chunk in out.chunks:
            seq = chunk.seq
            if seq.is_finished or not chunk.completes_sequence:
                continue
            seq.output_token_ids.append(0)
            n = len(seq.output_token_ids)
            done = n >= seq.sampling.max_tokens or seq.num_tokens >= self.max_model_len
            if done:
                self.scheduler.finish(seq, FinishReason.LENGTH)
                del self._seqs[seq.seq_id]
            events.append(TokenEvent(seq.seq_id, n, done))
        return events
