"""The engine: add a request, step, abort, stats. ``step()`` is schedule → execute → sample
→ postprocess, and it is the only place those four meet.

The engine owns per-request state the scheduler does not need (random generator,
detokeniser, stop-string matcher, pinned LoRA adapter) and validates every request before
it enters the queue, so bad input fails at ``add_request`` with an error naming the field.
Compute is behind the ``Executor`` protocol: the numpy model on the CPU, or (for servers
that simulate a GPU) anything that returns logits for a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shipit.core.errors import CapacityError, ContextLengthError, InvalidRequestError
from shipit.engine.block_manager import BlockManager, KVEvent
from shipit.engine.loader import LoadedModel
from shipit.engine.logits import TokenCounts, adjust_batch
from shipit.engine.lora import LoraRegistry
from shipit.engine.lora_files import LoraAdapter
from shipit.engine.model import F32, ForwardItem, LlamaModel, PagedKVCache
from shipit.engine.model_config import ModelConfig
from shipit.engine.sampling import (
    SampleResult,
    SamplingParams,
    StopStringMatcher,
    make_generator,
    sample,
)
from shipit.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from shipit.engine.sequence import FinishReason
from shipit.engine.sequence import Sequence as Seq
from shipit.engine.structured import GrammarMatcher, Grammars
from shipit.engine.tokenizer import IncrementalDetokenizer, Tokenizer

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = 16
    kv_cache_bytes: int = 512 * MIB
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    # None: the model's own context length, capped by what the KV cache holds.
    max_model_len: int | None = None
    max_waiting: int = 1024
    enable_prefix_caching: bool = True
    max_loras: int = 4

    def __post_init__(self) -> None:
        for name in (
            "block_size",
            "kv_cache_bytes",
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_waiting",
            "max_loras",
        ):
            if getattr(self, name) < 1:
                raise InvalidRequestError(
                    f"{name} must be >= 1, got {getattr(self, name)}", field=name
                )


class Executor(Protocol):
    """Runs one step's forward pass and returns logits for the items that need them."""

    def execute(self, items: Sequence[ForwardItem]) -> F32: ...


class CpuExecutor:
    """The numpy model over a paged KV cache in this process's memory."""

    def __init__(self, model: LlamaModel, cache: PagedKVCache) -> None:
        self.model = model
        self.cache = cache

    def execute(self, items: Sequence[ForwardItem]) -> F32:
        return self.model.forward(items, self.cache)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """What one step produced for one request (a delta, not the whole text)."""

    request_id: str
    new_token_ids: tuple[int, ...]
    new_text: str
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage_perc: float
    num_blocks: int
    block_size: int
    prefix_cache_queries: int  # tokens looked up
    prefix_cache_hits: int  # tokens found
    num_preemptions: int
    prompt_tokens: int  # prompt tokens computed (cache hits excluded)
    generation_tokens: int
    running_loras: tuple[str, ...]
    waiting_loras: tuple[str, ...]
    loaded_loras: tuple[str, ...]


@dataclass(eq=False, slots=True)
class _Request:
    seq: Seq
    generator: np.random.Generator
    detok: IncrementalDetokenizer
    stops: StopStringMatcher
    lora: LoraAdapter | None
    matcher: GrammarMatcher | None = None
    counts: TokenCounts = field(default_factory=TokenCounts)


class LLMEngine:
    def __init__(
        self,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        executor: Executor,
        *,
        config: EngineConfig,
        num_blocks: int,
        lora_registry: LoraRegistry | None = None,
    ) -> None:
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.executor = executor
        self.config = config
        self.blocks = BlockManager(
            num_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching
        )
        capacity = num_blocks * config.block_size
        self.max_model_len = min(
            config.max_model_len or model_config.max_position_embeddings,
            model_config.max_position_embeddings,
            capacity,
        )
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_model_len=self.max_model_len,
                max_waiting=config.max_waiting,
            ),
            self.blocks,
        )
        self.loras = (
            lora_registry
            if lora_registry is not None
            else LoraRegistry(model_config, max_loras=config.max_loras)
        )
        self._requests: dict[str, _Request] = {}
        self._arrivals = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._eos = frozenset(tokenizer.eos_token_ids) | frozenset(model_config.eos_token_ids)
        # Constrained decoding (response_format, forced tool calls); a tokenizer llguidance
        # cannot read (the simulated engine's) leaves constraints ignored.
        self.grammars = Grammars(tokenizer, model_config.vocab_size)

    @classmethod
    def from_weights(
        cls,
        model_config: ModelConfig,
        weights: Mapping[str, F32],
        tokenizer: Tokenizer,
        config: EngineConfig | None = None,
    ) -> LLMEngine:
        """An engine running the numpy model (Hugging Face weights), its KV cache sized by
        ``kv_cache_bytes``."""
        return cls.from_model(LlamaModel(model_config, weights), tokenizer, config)

    @classmethod
    def from_model(
        cls, model: LlamaModel, tokenizer: Tokenizer, config: EngineConfig | None = None
    ) -> LLMEngine:
        """An engine running ``model``, its KV cache sized by ``kv_cache_bytes``."""
        config = config or EngineConfig()
        model_config = model.config
        block_bytes = model_config.kv_bytes_per_token * config.block_size
        num_blocks = config.kv_cache_bytes // block_bytes
        if num_blocks < 1:
            raise InvalidRequestError(
                f"kv_cache_bytes={config.kv_cache_bytes} holds no KV block of {block_bytes} "
                "bytes; raise it",
                field="kv_cache_bytes",
            )
        cache = PagedKVCache(model_config, num_blocks=num_blocks, block_size=config.block_size)
        executor = CpuExecutor(model, cache)
        return cls(model_config, tokenizer, executor, config=config, num_blocks=num_blocks)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, config: EngineConfig | None = None) -> LLMEngine:
        return cls.from_weights(loaded.config, loaded.weights, loaded.tokenizer, config)

    # ----- requests --------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        lora_name: str | None = None,
        cache_salt: str | None = None,
    ) -> None:
        """Queue a request; raises before queueing if anything about it is wrong."""
        if request_id in self._requests:
            raise InvalidRequestError(
                f"request id {request_id!r} is already running", field="request_id"
            )
        token_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self._validate_tokens(token_ids, params)
        if len(self.scheduler.waiting) >= self.config.max_waiting:
            raise CapacityError(
                f"the waiting queue is full ({self.config.max_waiting} requests); retry later",
                field="max_waiting",
            )
        matcher = self.grammars.matcher(params.constraint) if params.constraint else None
        lora = self.loras.acquire(lora_name) if lora_name else None
        seq = Seq(
            request_id,
            token_ids,
            params,
            self._arrivals,
            priority=priority,
            lora_name=lora_name,
            cache_salt=cache_salt,
        )
        self._arrivals += 1
        self._requests[request_id] = _Request(
            seq,
            make_generator(params.seed),
            IncrementalDetokenizer(self.tokenizer),
            StopStringMatcher(params.stop),
            lora,
            matcher,
        )
        self.scheduler.add(seq)

    def _validate_tokens(self, token_ids: list[int], params: SamplingParams) -> None:
        if not token_ids:
            raise InvalidRequestError(
                "the prompt is empty; send at least one token", field="prompt"
            )
        if len(token_ids) >= self.max_model_len:
            raise ContextLengthError(prompt_tokens=len(token_ids), max_model_len=self.max_model_len)
        bad = [t for t in token_ids if not 0 <= t < self.model_config.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"token id {bad[0]} is outside the vocabulary [0, {self.model_config.vocab_size})",
                field="prompt",
            )
        vocab = self.model_config.vocab_size
        out_of_vocab = [t for t, _ in params.logit_bias if t >= vocab]
        if out_of_vocab:
            raise InvalidRequestError(
                f"logit_bias: token id {out_of_vocab[0]} is outside the vocabulary [0, {vocab})",
                field="logit_bias",
            )
        self.blocks.check_fits(min(len(token_ids) + params.max_tokens, self.max_model_len))

    def abort(self, request_id: str) -> bool:
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self.scheduler.abort(req.seq)
        self._release(req)
        return True

    def _release(self, req: _Request) -> None:
        if req.lora is not None:
            self.loras.release(req.lora.name)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work()

    # ----- one step ----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        out = self.scheduler.schedule()
        if not out.chunks:
            return []
        items = [
            ForwardItem(
                request_id=c.seq.seq_id,
                token_ids=c.seq.token_slice(c.start_pos, c.start_pos + c.num_tokens),
                start_pos=c.start_pos,
                block_table=c.seq.block_table,
                need_logits=c.completes_sequence,
                lora=self._requests[c.seq.seq_id].lora,
            )
            for c in out.chunks
        ]
        logits = self.executor.execute(items)
        self._prompt_tokens += sum(
            min(c.num_tokens, max(c.seq.num_prompt_tokens - c.start_pos, 0)) for c in out.chunks
        )
        self.scheduler.commit(out)
        return self._postprocess(out, logits)

    def _postprocess(self, out: SchedulerOutput, logits: F32) -> list[RequestOutput]:
        sampling = [c.seq for c in out.chunks if c.completes_sequence]
        reqs = [self._requests[s.seq_id] for s in sampling]
        params = [s.sampling for s in sampling]
        masks = [r.matcher.allowed() if r.matcher is not None else None for r in reqs]
        logits = adjust_batch(logits, params, [r.counts for r in reqs], masks)
        results = sample(logits, params, [r.generator for r in reqs])
        outputs = []
        for req, result in zip(reqs, results, strict=True):
            outputs.append(self._append_token(req, result))
        return outputs

    def _append_token(self, req: _Request, result: SampleResult) -> RequestOutput:
        seq, params = req.seq, req.seq.sampling
        token = result.token_id
        seq.output_token_ids.append(token)
        req.counts.add(token)
        self._generation_tokens += 1
        reason: FinishReason | None = None
        text, by_stop_string = "", False
        if (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids:
            reason = FinishReason.STOP
        else:
            text, by_stop_string = req.stops.push(req.detok.push(token))
            if by_stop_string or self._grammar_done(req, token):
                reason = FinishReason.STOP
        if reason is None and (
            len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len
        ):
            reason = FinishReason.LENGTH
        if reason is not None and not by_stop_string:
            # Release text held back for a possible multi-byte character or stop string.
            tail, hit = req.stops.push(req.detok.flush())
            text += tail if hit else tail + req.stops.flush()
        logprobs: tuple[TokenLogprob, ...] = ()
        if result.logprob is not None:
            logprobs = (TokenLogprob(token, result.logprob, result.top_logprobs or ()),)
        if reason is not None:
            self.scheduler.finish(seq, reason)
            del self._requests[seq.seq_id]
            self._release(req)
        return RequestOutput(
            request_id=seq.seq_id,
            new_token_ids=(token,),
            new_text=text,
            finished=reason is not None,
            finish_reason=reason.value if reason else None,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=len(seq.output_token_ids),
            num_cached_tokens=seq.num_cached_tokens,
            logprobs=logprobs,
        )

    @staticmethod
    def _grammar_done(req: _Request, token: int) -> bool:
        """Advance the request's grammar; True once it is complete (nothing may follow).
        A refused token cannot be sampled under the mask; should it happen, stop there."""
        if req.matcher is None:
            return False
        return not req.matcher.consume(token) or req.matcher.done

    # ----- conveniences ------------------------------------------------------------------
    def generate(
        self, prompts: Iterable[str | list[int]], params: SamplingParams
    ) -> list[tuple[list[int], str]]:
        """Run prompts to completion (tests, benchmarks, the CLI); token ids and text each."""
        ids = []
        for i, prompt in enumerate(prompts):
            rid = f"generate-{self._arrivals}-{i}"
            self.add_request(rid, prompt, params)
            ids.append(rid)
        results: dict[str, tuple[list[int], list[str]]] = {r: ([], []) for r in ids}
        while self.has_unfinished_requests():
            for o in self.step():
                if o.request_id in results:
                    results[o.request_id][0].extend(o.new_token_ids)
                    results[o.request_id][1].append(o.new_text)
        return [(results[r][0], "".join(results[r][1])) for r in ids]

    def load_lora(self, name: str, path: str) -> LoraAdapter:
        evictions = self.loras.evictions
        adapter = self.loras.load(name, path)
        if self.loras.evictions != evictions:
            self._forget_adapter_prefixes()
        return adapter

    def unload_lora(self, name: str) -> None:
        self.loras.unload(name)
        self._forget_adapter_prefixes()

    def _forget_adapter_prefixes(self) -> None:
        """Cached prefixes are keyed by adapter *name*; once a name stops meaning the weights
        that computed them (unloaded or evicted, and perhaps later loaded from another path),
        their KV must not be reused. Only free blocks hold cached prefixes of an adapter no
        running request uses, so dropping the free cached blocks is enough (it costs other
        adapters' cached prefixes too; the KV-event feed reports every eviction)."""
        self.blocks.reset_prefix_cache()

    def drain_kv_events(self) -> list[KVEvent]:
        return self.blocks.drain_events()

    def stats(self) -> EngineStats:
        usage = self.blocks.usage()
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_cache_usage_perc=usage.usage_perc,
            num_blocks=usage.num_blocks,
            block_size=usage.block_size,
            prefix_cache_queries=self.blocks.prefix_cache_queries,
            prefix_cache_hits=self.blocks.prefix_cache_hits,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self._prompt_tokens,
            generation_tokens=self._generation_tokens,
            running_loras=tuple(
                sorted({s.lora_name for s in self.scheduler.running if s.lora_name})
            ),
            waiting_loras=tuple(
                sorted({s.lora_name for s in self.scheduler.waiting if s.lora_name})
            ),
            loaded_loras=tuple(self.loras.names()),
        )
