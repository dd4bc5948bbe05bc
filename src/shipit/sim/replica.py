"""One replica's engine in simulated time: the engine's own scheduler and block manager, timed
by the same step-time function as a ``--simulate`` replica.

``SimReplica`` holds an ``engine.scheduler.Scheduler`` over an ``engine.block_manager.
BlockManager`` sized by the planner's VRAM plan, exactly as ``engine.simulated`` builds them, so
a step batches what the live engine would batch: a token budget of ``max_num_batched_tokens``,
one token for each decoding sequence, the rest in prefill chunks, in priority-then-arrival
order, with preemption when the KV cache runs out. ``start_step`` schedules a step and returns
when it ends (``engine.sim_timing`` times it); ``finish_step`` commits it and says which
requests got tokens. A request added (or aborted) while a step runs joins the next step, as
between the engine's steps.

Decode runs, for speed: when every running sequence is decoding, nothing waits and the KV cache
holds the next ``k`` tokens of each, the next ``k`` steps are known in advance (one token each,
the context growing by one per step), so they are timed one by one but applied in one go, up to
the first step that finishes a sequence; an arrival or an abort cuts the run at the step then
running. The result equals stepping one at a time (``tests/unit/sim/test_replica.py`` checks).

Simplifications, stated: every generated token is a length-limited one (no EOS), as on a
``--simulate`` replica; a prompt's content is unique to it unless the caller gives its tokens
(``sim.prompts``: a trace's shared prefixes), so without them the prefix cache hits only where a
preempted sequence finds its own blocks again, as on the engine.
No clock (time comes in), no IO.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from shipit.core.errors import CapacityError, ContextLengthError
from shipit.engine.block_manager import BlockManager
from shipit.engine.sampling import SamplingParams
from shipit.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from shipit.engine.sequence import FinishReason, Sequence
from shipit.engine.sim_timing import ReplicaTiming, StepShape, decode_step_ends


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """What the step (or decode run) produced for one request."""

    request_id: str
    output_tokens: int  # produced so far
    finished: bool


@dataclass(slots=True)
class _DecodeRun:
    seqs: tuple[Sequence, ...]
    start_s: float
    ends_s: list[float]  # when each of its steps ends; cut short by an arrival


class SimReplica:
    def __init__(self, timing: ReplicaTiming, *, decode_runs: bool = True) -> None:
        cfg = timing.model.engine
        self.timing = timing
        self.step_time = timing.step_time
        self.decode_runs = decode_runs
        self.blocks = BlockManager(
            timing.num_kv_blocks, cfg.block_size, enable_prefix_caching=cfg.enable_prefix_caching
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
        self._run: _DecodeRun | None = None
        self.step_end_s: float | None = None  # when the step (or run) in progress ends
        self.num_steps = 0
        self.busy_s = 0.0  # modelled accelerator time, summed

    # ----- requests --------------------------------------------------------------------
    def add(
        self,
        request_id: str,
        prompt_tokens: int,
        max_tokens: int,
        priority: int = 0,
        *,
        now_s: float,
        token_ids: list[int] | None = None,
    ) -> None:
        """Queue a request; raises as the engine's ``add_request`` would (too long, never fits,
        waiting queue full). ``token_ids``: the prompt's content (``sim.prompts``), so shared
        prefixes hit the prefix cache; None: content unique to the request."""
        if prompt_tokens >= self.max_model_len:
            raise ContextLengthError(prompt_tokens=prompt_tokens, max_model_len=self.max_model_len)
        self.blocks.check_fits(min(prompt_tokens + max_tokens, self.max_model_len))
        if len(self.scheduler.waiting) >= self.scheduler.config.max_waiting:
            raise CapacityError(
                f"the waiting queue is full ({self.scheduler.config.max_waiting} requests)",
                field="max_waiting",
            )
        # Unique content unless given: the arrival index leads, so no two prompts share a block.
        tokens = token_ids or [self._arrivals, *([0] * (prompt_tokens - 1))]
        params = SamplingParams(max_tokens=max_tokens, temperature=0)
        seq = Sequence(request_id, tokens, params, self._arrivals, priority=priority)
        self._arrivals += 1
        self._seqs[request_id] = seq
        self.scheduler.add(seq)
        self._cut(now_s)

    def abort(self, request_id: str, *, now_s: float) -> bool:
        seq = self._seqs.pop(request_id, None)
        if seq is None or not self.scheduler.abort(seq):
            return False
        self._cut(now_s)
        return True

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

    # ----- stepping --------------------------------------------------------------------
    def start_step(self, now_s: float) -> float | None:
        """Start the next step (or decode run); when it ends, or None when nothing can run."""
        if self.step_end_s is not None:
            raise RuntimeError("a step is already running")
        run = self._decode_run(now_s) if self.decode_runs else None
        if run is not None:
            self._run = run
            self.step_end_s = run.ends_s[-1]
            return self.step_end_s
        out = self.scheduler.schedule()
        if not out.chunks:
            return None
        self._step = out
        duration_s = self.step_time(
            StepShape.of_spans((c.start_pos, c.num_tokens) for c in out.chunks)
        )
        self.num_steps += 1
        self.busy_s += duration_s
        self.step_end_s = now_s + duration_s
        return self.step_end_s

    def finish_step(self) -> list[TokenEvent]:
        """The step (or run) ended: commit it; a token for every sequence whose chunk reached
        its end."""
        out, run, self._step, self._run = self._step, self._run, None, None
        self.step_end_s = None
        self.blocks.drain_events()  # nobody reads the KV-event feed here
        if run is not None:
            return self._finish_run(run)
        if out is None:
            return []
        self.scheduler.commit(out)
        events = []
        for chunk in out.chunks:
            seq = chunk.seq
            if not seq.is_finished and chunk.completes_sequence:
                events.append(self._emit(seq, 1))
        return events

    def _emit(self, seq: Sequence, tokens: int) -> TokenEvent:
        seq.output_token_ids.extend([0] * tokens)
        n = len(seq.output_token_ids)
        done = n >= seq.sampling.max_tokens or seq.num_tokens >= self.max_model_len
        if done:
            self.scheduler.finish(seq, FinishReason.LENGTH)
            del self._seqs[seq.seq_id]
        return TokenEvent(seq.seq_id, n, done)

    # ----- decode runs -----------------------------------------------------------------
    def _decode_run(self, now_s: float) -> _DecodeRun | None:
        """The next steps, when they are all plain decodes of the running batch."""
        s = self.scheduler
        seqs = tuple(s.running)
        if s.waiting or not seqs or len(seqs) > s.config.max_num_batched_tokens:
            return None
        steps = self.max_model_len
        for seq in seqs:
            if seq.num_tokens - seq.num_computed_tokens != 1 or not seq.output_token_ids:
                return None
            left = min(
                seq.sampling.max_tokens - len(seq.output_token_ids),
                self.max_model_len - seq.num_tokens,
            )
            steps = min(steps, left)  # the step that produces its last token ends the run
        steps = self._steps_that_fit(seqs, steps)
        if steps < 2:
            return None
        ends = decode_step_ends(
            self.step_time,
            start_s=now_s,
            num_seqs=len(seqs),
            total_context_tokens=sum(seq.num_computed_tokens for seq in seqs),
            steps=steps,
        )
        return _DecodeRun(seqs, now_s, ends)

    def _steps_that_fit(self, seqs: tuple[Sequence, ...], steps: int) -> int:
        """The most steps, up to ``steps``, whose new tokens the free KV blocks hold."""

        def fits(k: int) -> bool:
            need = sum(
                max(self.blocks.blocks_needed(q.num_computed_tokens + k) - len(q.block_table), 0)
                for q in seqs
            )
            return need <= self.blocks.num_free_blocks

        lo, hi = 0, steps
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def _cut(self, now_s: float) -> None:
        """An arrival or an abort: the run ends with the step running at ``now_s``."""
        run = self._run
        if run is None:
            return
        keep = bisect.bisect_left(run.ends_s, now_s) + 1
        if keep < len(run.ends_s):
            del run.ends_s[keep:]
            self.step_end_s = run.ends_s[-1]

    def _finish_run(self, run: _DecodeRun) -> list[TokenEvent]:
        steps = len(run.ends_s)
        self.num_steps += steps
        self.busy_s += run.ends_s[-1] - run.start_s
        events = []
        for seq in run.seqs:
            if seq.is_finished:
                continue  # aborted during the run
            if not self.blocks.allocate(seq, steps):
                raise RuntimeError(f"decode run of {steps} steps overran the KV cache")
            seq.num_computed_tokens += steps
            self.blocks.cache_full_blocks(seq)
            events.append(self._emit(seq, steps))
        return events
