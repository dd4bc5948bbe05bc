"""Token sampling for the embedded engine: request parameters, one batched ``sample`` step,
and stop-string matching over streamed text.

This module owns the meaning of every sampling parameter (validated once, in
``SamplingParams``), how a batch of logit rows becomes one token per row, and how stop
strings are held back and cut from streamed text. It must not do IO, read clocks, or keep
state between calls other than what a caller hands in (each request's ``Generator`` and its
``StopStringMatcher``), so that a seeded request gives the same tokens alone or in any batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shipit.core.errors import InvalidRequestError
from shipit.engine.structured import Constraint

MAX_STOP_STRINGS = 8
MAX_PENALTY = 2.0  # OpenAI's range for presence_penalty and frequency_penalty: [-2, 2]
MAX_LOGIT_BIAS = 100.0  # OpenAI's range for one logit_bias value: [-100, 100]
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_LOGPROBS = 20
MAX_TEMPERATURE = 2.0
# First guess at how many tokens a nucleus needs; grown 8x until the mass is reached, so a
# peaked distribution (the common case) never pays for sorting the whole vocabulary.
_NUCLEUS_FIRST_GUESS = 64
# Block length for drawing over a whole vocabulary (see ``_draw_blocked``).
_DRAW_BLOCK = 1024


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request turns logits into tokens; validated on construction."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 => exact argmax of the raw logits (greedy), no randomness
    top_p: float = 1.0  # (0, 1]
    top_k: int = 0  # 0 = disabled; else >= 1
    stop: tuple[str, ...] = ()  # stop strings, cut from the output
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None  # reproducible per request, whatever the batch holds
    logprobs: int | None = None  # None = off; k => chosen token's logprob + k alternatives
    # OpenAI semantics, over the tokens generated so far: each logit drops by
    # count * frequency_penalty + (count > 0) * presence_penalty.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    constraint: Constraint | None = None  # the output must follow this grammar

    def __post_init__(self) -> None:
        # Callers often hand in JSON lists (or OpenAI's bare string for ``stop``); store tuples
        # so the record stays hashable and immutable.
        stop: object = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if isinstance(stop, list):
            stop = tuple(stop)
        object.__setattr__(self, "stop", stop)
        stop_ids: object = self.stop_token_ids
        if isinstance(stop_ids, list):
            stop_ids = tuple(stop_ids)
        object.__setattr__(self, "stop_token_ids", stop_ids)
        bias: object = self.logit_bias
        if isinstance(bias, dict):
            bias = tuple(bias.items())
        if isinstance(bias, list):
            bias = tuple(tuple(pair) for pair in bias)
        object.__setattr__(self, "logit_bias", bias)
        self._validate()

    def _validate(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidRequestError(
                f"max_tokens must be an integer >= 1; got {self.max_tokens!r}",
                field="max_tokens",
            )
        t = self.temperature
        if not _is_number(t) or not 0.0 <= float(t) <= MAX_TEMPERATURE:
            raise InvalidRequestError(
                f"temperature must be a number between 0 and {MAX_TEMPERATURE:g} "
                f"(0 means greedy); got {t!r}",
                field="temperature",
            )
        p = self.top_p
        if not _is_number(p) or not 0.0 < float(p) <= 1.0:
            raise InvalidRequestError(
                f"top_p must be a number in (0, 1] (1 disables nucleus sampling); got {p!r}",
                field="top_p",
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidRequestError(
                f"top_k must be an integer >= 0 (0 disables it); got {self.top_k!r}",
                field="top_k",
            )
        self._validate_stops()
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise InvalidRequestError(
                f"seed must be an integer >= 0 or null; got {self.seed!r}", field="seed"
            )
        lp = self.logprobs
        if lp is not None and (not _is_int(lp) or not 0 <= lp <= MAX_LOGPROBS):
            raise InvalidRequestError(
                f"logprobs must be an integer between 0 and {MAX_LOGPROBS} or null; got {lp!r}",
                field="logprobs",
            )
        if not isinstance(self.ignore_eos, bool):
            raise InvalidRequestError(
                f"ignore_eos must be true or false; got {self.ignore_eos!r}", field="ignore_eos"
            )
        self._validate_penalties()

    def _validate_penalties(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not -MAX_PENALTY <= float(value) <= MAX_PENALTY:
                raise InvalidRequestError(
                    f"{name} must be a number between -{MAX_PENALTY:g} and {MAX_PENALTY:g}; "
                    f"got {value!r}",
                    field=name,
                )
        bias: object = self.logit_bias
        if not isinstance(bias, tuple) or len(bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise InvalidRequestError(
                f"logit_bias must map at most {MAX_LOGIT_BIAS_ENTRIES} token ids to numbers; "
                f"got {bias!r}",
                field="logit_bias",
            )
        for pair in bias:
            ok = isinstance(pair, tuple) and len(pair) == 2 and _is_int(pair[0]) and pair[0] >= 0
            if not ok or not _is_number(pair[1]) or abs(float(pair[1])) > MAX_LOGIT_BIAS:
                raise InvalidRequestError(
                    f"logit_bias maps token ids (integers >= 0) to numbers between "
                    f"-{MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}; got {pair!r}",
                    field="logit_bias",
                )

    def _validate_stops(self) -> None:
        stop: object = self.stop
        if not isinstance(stop, tuple) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequestError(
                f"stop must be a string or a list of strings; got {stop!r}", field="stop"
            )
        if len(stop) > MAX_STOP_STRINGS:
            raise InvalidRequestError(
                f"stop accepts at most {MAX_STOP_STRINGS} strings; got {len(stop)}", field="stop"
            )
        if any(s == "" for s in stop):
            raise InvalidRequestError(f"stop strings must be non-empty; got {stop!r}", field="stop")
        ids: object = self.stop_token_ids
        if not isinstance(ids, tuple) or not all(_is_int(i) and i >= 0 for i in ids):
            raise InvalidRequestError(
                f"stop_token_ids must be a list of integers >= 0; got {ids!r}",
                field="stop_token_ids",
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def adjusts_logits(self) -> bool:
        """Whether penalties, a bias or a constraint change the logits before sampling."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.logit_bias
            or self.constraint is not None
        )


@dataclass(frozen=True, slots=True)
class SampleResult:
    """One sampled token, with log-probabilities under the raw model distribution if asked."""

    token_id: int
    logprob: float | None
    top_logprobs: tuple[tuple[int, float], ...] | None


def make_generator(seed: int | None) -> np.random.Generator:
    """A request's own random stream: seeded if the request gave a seed, else fresh entropy."""
    return np.random.default_rng(seed)


def sample(
    logits: np.ndarray,
    params: Sequence[SamplingParams],
    generators: Sequence[np.random.Generator],
) -> list[SampleResult]:
    """Pick one token per row of ``logits`` (``[n, vocab]``), row ``i`` under ``params[i]``.

    Greedy rows (temperature 0) are one vectorised ``argmax`` over the raw logits and draw no
    random numbers. Every other row draws exactly one uniform number from its own generator
    per call and looks only at its own logits, so a seeded request's tokens do not depend on
    what else is in the batch.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [batch, vocab]; got shape {logits.shape}")
    n = logits.shape[0]
    if len(params) != n or len(generators) != n:
        raise ValueError(
            f"need one SamplingParams and one Generator per logits row: {n} rows, "
            f"{len(params)} params, {len(generators)} generators"
        )
    if n == 0:
        return []
    if logits.dtype != np.float32:
        logits = logits.astype(np.float32)

    token_ids = np.zeros(n, dtype=np.int64)
    greedy = np.fromiter((p.temperature == 0 for p in params), dtype=bool, count=n)
    if greedy.any():
        token_ids[greedy] = np.argmax(logits[greedy], axis=1)
    for row in np.flatnonzero(~greedy).tolist():
        token_ids[row] = _sample_row(logits[row], params[row], generators[row])

    results: list[SampleResult] = []
    for i, p in enumerate(params):
        tok = int(token_ids[i])
        if p.logprobs is None:
            results.append(SampleResult(token_id=tok, logprob=None, top_logprobs=None))
        else:
            results.append(_with_logprobs(logits[i], tok, p.logprobs))
    return results


def _sample_row(row: np.ndarray, p: SamplingParams, gen: np.random.Generator) -> int:
    """Temperature, then top-k, then top-p, then one inverse-CDF draw with ``gen``."""
    # Drawn first and unconditionally: the same number of draws per token whatever happens.
    u = float(gen.random())
    vocab = int(row.shape[0])
    if p.top_k == 1:
        return int(np.argmax(row))
    xmax = float(np.max(row))
    if not math.isfinite(xmax):
        # A row of -inf (everything masked) or +inf/NaN: no distribution to draw from.
        return int(np.argmax(row))
    inv_t = 1.0 / float(p.temperature)

    if 0 < p.top_k < vocab:
        # Ranked on the raw logits: temperature is monotonic, and ranking before scaling
        # keeps ties and near-ties resolved exactly as ``argmax`` resolves them.
        cand = _top_ids(row, p.top_k)
        cum = np.cumsum(_weights(row[cand], xmax, inv_t), dtype=np.float64)
        if p.top_p < 1.0:
            cum = cum[: _nucleus_size(cum, p.top_p)]
        return int(cand[_draw(cum, u)])

    weights = _weights(row, xmax, inv_t)
    if p.top_p >= 1.0:
        # No truncation: draw over the vocabulary in index order, no sorting at all.
        return _draw_blocked(weights, u)
    ids = _nucleus(row, weights, p.top_p, xmax, inv_t)
    return int(ids[_draw(np.cumsum(weights[ids], dtype=np.float64), u)])


def _weights(logits: np.ndarray, xmax: float, inv_t: float) -> np.ndarray:
    """Unnormalised probabilities ``exp((x - max) / T)``, all in [0, 1]: no overflow.

    float32 is ~10x faster than float64 here and ample for drawing; sums are taken in float64.
    """
    out: np.ndarray = np.exp((logits - np.float32(xmax)) * np.float32(inv_t))
    return out


def _top_ids(row: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-logit token ids, highest first, ties broken by the lower id.

    ``np.partition`` finds the k-th value (cheaper than ``argpartition``); the ids are then
    picked by comparison, so ties at the boundary go to the lowest ids, as ``argmax`` would.
    """
    vocab = int(row.shape[0])
    if k >= vocab:
        ids = np.arange(vocab)
    else:
        kth = row.dtype.type(np.partition(row, vocab - k)[vocab - k])
        above = np.flatnonzero(row > kth)
        at = np.flatnonzero(row == kth)[: k - int(above.shape[0])]
        ids = np.sort(np.concatenate((above, at)))
    # Stable sort over ascending ids: equal logits keep the lower id first.
    ranked: np.ndarray = ids[np.argsort(-row[ids], kind="stable")]
    return ranked


def _nucleus_size(cum: np.ndarray, top_p: float) -> int:
    """Smallest prefix whose share of ``cum[-1]`` reaches ``top_p``; at least one token."""
    target = top_p * float(cum[-1])
    return min(int(np.searchsorted(cum, target, side="left")) + 1, int(cum.shape[0]))


def _nucleus(
    row: np.ndarray, weights: np.ndarray, top_p: float, xmax: float, inv_t: float
) -> np.ndarray:
    """The nucleus's token ids, ascending: the fewest highest-logit tokens with mass >= top_p.

    Finds the cut on the top ``m`` logit *values* (``np.partition``, no index sort), growing
    ``m`` only while their mass falls short, so a peaked distribution never sorts the whole
    vocabulary; then selects the ids by comparing against the cut value (ties to lower ids).
    """
    vocab = int(row.shape[0])
    target = top_p * float(weights.sum(dtype=np.float64))
    m = min(_NUCLEUS_FIRST_GUESS, vocab)
    while True:
        vals = np.partition(row, vocab - m)[vocab - m :] if m < vocab else row
        vals = np.sort(vals)[::-1]
        cum = np.cumsum(_weights(vals, xmax, inv_t), dtype=np.float64)
        if float(cum[-1]) >= target or m >= vocab:
            break
        # One intermediate step, then the whole vocabulary: every retry repeats the partition.
        m = vocab // 8 if m < vocab // 8 else vocab
    keep = min(int(np.searchsorted(cum, target, side="left")) + 1, m)
    kth = vals[keep - 1]
    above = np.flatnonzero(row > kth)
    at = np.flatnonzero(row == kth)[: keep - int(above.shape[0])]
    ids: np.ndarray = np.sort(np.concatenate((above, at)))
    return ids


def _draw(cdf: np.ndarray, u: float) -> int:
    """Inverse-CDF draw: the index where ``u * total`` falls in the cumulative weights."""
    # side="right" skips zero-weight entries (a flat step in the CDF never wins).
    idx = int(np.searchsorted(cdf, u * float(cdf[-1]), side="right"))
    return min(idx, int(cdf.shape[0]) - 1)


def _draw_blocked(weights: np.ndarray, u: float) -> int:
    """``_draw`` over a whole vocabulary without a full-length (sequential, slow) cumsum.

    Sums fixed-size blocks, picks the block where ``u * total`` falls, then runs the
    cumulative sum inside that one block only.
    """
    n = int(weights.shape[0])
    if n <= _DRAW_BLOCK:
        return _draw(np.cumsum(weights, dtype=np.float64), u)
    n_blocks = -(-n // _DRAW_BLOCK)
    padded = np.zeros(n_blocks * _DRAW_BLOCK, dtype=weights.dtype)
    padded[:n] = weights
    blocks = padded.reshape(n_blocks, _DRAW_BLOCK)
    block_cum = np.cumsum(blocks.sum(axis=1, dtype=np.float64))
    target = u * float(block_cum[-1])
    b = int(np.searchsorted(block_cum, target, side="right"))
    # Rounding can push the target past the last block with mass; use that block then.
    last_nonempty = int(np.flatnonzero(np.diff(block_cum, prepend=0.0) > 0)[-1])
    b = min(b, last_nonempty)
    before = float(block_cum[b - 1]) if b > 0 else 0.0
    inner = np.cumsum(blocks[b], dtype=np.float64)
    j = int(np.searchsorted(inner, target - before, side="right"))
    if j >= _DRAW_BLOCK:
        j = int(np.flatnonzero(blocks[b])[-1])
    return b * _DRAW_BLOCK + j


def _with_logprobs(row: np.ndarray, token_id: int, k: int) -> SampleResult:
    """log_softmax of the raw logits (no temperature): the chosen token and the top ``k``."""
    x = row.astype(np.float64)
    xmax = float(np.max(x))
    lse = xmax + math.log(float(np.sum(np.exp(x - xmax))))
    chosen = float(x[token_id] - lse)
    if k == 0:
        return SampleResult(token_id=token_id, logprob=chosen, top_logprobs=())
    top = _top_ids(row, k)
    # Tokens a constraint or a -100 bias ruled out are no alternatives.
    alts = tuple((int(t), float(x[t] - lse)) for t in top if math.isfinite(float(x[t])))
    return SampleResult(token_id=token_id, logprob=chosen, top_logprobs=alts)


class StopStringMatcher:
    """Per request: feed text deltas, get back text safe to emit, hold back a possible partial
    stop-string match; on a full match, return the text before it and report stopped.

    Generation stops at the earliest point where any stop string is complete; if several end
    there, the longest wins (the cut is at its start). The result does not depend on how the
    text was split into deltas.
    """

    __slots__ = ("_held", "_max_len", "_stopped", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        if any(s == "" for s in stops):
            raise InvalidRequestError(
                f"stop strings must be non-empty; got {stops!r}", field="stop"
            )
        self._stops = tuple(stops)
        self._max_len = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def push(self, delta: str) -> tuple[str, bool]:
        """Add ``delta``; return (text to emit now, whether a stop string has completed)."""
        if self._stopped:
            return "", True
        if not self._stops:
            return delta, False
        text = self._held + delta
        cut = self._first_stop(text)
        if cut is not None:
            self._held = ""
            self._stopped = True
            return text[:cut], True
        hold = self._partial_suffix_len(text)
        self._held = text[len(text) - hold :]
        return text[: len(text) - hold], False

    def flush(self) -> str:
        """At the end of generation: release whatever was held back (nothing after a stop)."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _first_stop(self, text: str) -> int | None:
        best: tuple[int, int] | None = None  # (end, start): earliest end, then earliest start
        for s in self._stops:
            start = text.find(s)
            if start >= 0:
                key = (start + len(s), start)
                if best is None or key < best:
                    best = key
        return None if best is None else best[1]

    def _partial_suffix_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that some stop string starts with."""
        for length in range(min(len(text), self._max_len - 1), 0, -1):
            tail = text[len(text) - length :]
            if any(s.startswith(tail) for s in self._stops):
                return length
        return 0
