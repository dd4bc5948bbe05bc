"""Shadow traffic, the pure half: which live requests to mirror to a candidate, and the diff
report of what the mirrored copies did against what the users got.

``mirror`` decides per request: mirror only a ``percent`` share (a stable point of the request
id, so a replay decides alike), never when live requests are waiting at the gateway (mirrored
work is dropped first under load), never past ``max_in_flight`` mirrored requests or when no
candidate replica has a free slot. The user's request is never delayed by the decision: the
driver sends the copy beside it and drops it on any doubt.

``diff_report`` compares pairs (the user's answer, the candidate's answer to the same request):
TTFT and TPOT deltas as the median of per-pair differences with a bootstrap 95 % interval,
error rates of both sides, and for temperature-0 requests the answers themselves: exact-match
rate, token edit distance (Levenshtein over whitespace tokens) and length delta. No clock, no
IO; the bootstrap draws from a generator seeded by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shipit.policy.routing.filters import unit_interval


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    percent: float = 10.0  # share of live requests mirrored
    max_in_flight: int = 8  # mirrored requests at once, at most


@dataclass(frozen=True, slots=True)
class MirrorSnapshot:
    request_id: str
    queued: int  # live requests waiting at the gateway now
    in_flight: int  # mirrored requests running now
    candidate_free_slots: int


@dataclass(frozen=True, slots=True)
class MirrorDecision:
    mirror: bool
    reason_code: str  # mirror, not_sampled, live_queue, shadow_full, candidate_busy
    reason: str


def mirror(config: MirrorConfig, snapshot: MirrorSnapshot) -> MirrorDecision:
    if unit_interval("shadow:" + snapshot.request_id) * 100.0 >= config.percent:
        return MirrorDecision(False, "not_sampled", f"outside the {config.percent:g} % sample")
    if snapshot.queued > 0:
        why = f"{snapshot.queued} live requests wait: live traffic first"
        return MirrorDecision(False, "live_queue", why)
    if snapshot.in_flight >= config.max_in_flight:
        why = f"{snapshot.in_flight} mirrored requests in flight (max {config.max_in_flight})"
        return MirrorDecision(False, "shadow_full", why)
    if snapshot.candidate_free_slots <= 0:
        return MirrorDecision(False, "candidate_busy", "no candidate replica has a free slot")
    return MirrorDecision(True, "mirror", f"in the {config.percent:g} % sample")


@dataclass(frozen=True, slots=True)
class Answer:
    """One side of a pair: what one version answered."""

    ok: bool
    ttft_s: float | None = None
    tpot_s: float | None = None
    text: str | None = None  # the answer's text, kept for temperature-0 requests


@dataclass(frozen=True, slots=True)
class Pair:
    live: Answer
    shadow: Answer
    temperature_zero: bool = False


@dataclass(frozen=True, slots=True)
class Delta:
    """Shadow minus live: the median of per-pair differences and its 95 % interval."""

    metric: str
    median_s: float
    low_s: float
    high_s: float
    n: int


@dataclass(frozen=True, slots=True)
class ShadowReport:
    pairs: int
    live_error_rate: float
    shadow_error_rate: float
    latency: tuple[Delta, ...]
    compared: int  # temperature-0 pairs with both answers
    exact_match_rate: float | None
    mean_edit_distance: float | None  # tokens
    mean_length_delta: float | None  # tokens, shadow minus live
    reason: str


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute: 1)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    prev = np.arange(len(b) + 1)
    for i, tok in enumerate(a, start=1):
        cur = np.empty_like(prev)
        cur[0] = i
        cost = np.array([0 if tok == t else 1 for t in b])
        # Substitution / match and deletion first, then insertions left to right.
        cur[1:] = np.minimum(prev[:-1] + cost, prev[1:] + 1)
        for j in range(1, len(b) + 1):
            if cur[j - 1] + 1 < cur[j]:
                cur[j] = cur[j - 1] + 1
        prev = cur
    return int(prev[-1])


def _delta(
    metric: str, diffs: list[float], rng: np.random.Generator, resamples: int
) -> Delta | None:
    if len(diffs) < 2:
        return None
    d = np.asarray(diffs)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    medians = np.median(d[idx], axis=1)
    low, high = np.quantile(medians, [0.025, 0.975])
    return Delta(metric, float(np.median(d)), float(low), float(high), len(d))


def diff_report(pairs: Sequence[Pair], *, seed: int = 0, resamples: int = 1000) -> ShadowReport:
    n = len(pairs)
    rng = np.random.default_rng(seed)
    live_err = sum(not p.live.ok for p in pairs) / n if n else 0.0
    shadow_err = sum(not p.shadow.ok for p in pairs) / n if n else 0.0
    deltas = []
    for metric in ("ttft", "tpot"):
        diffs = []
        for p in pairs:
            a = getattr(p.live, f"{metric}_s")
            b = getattr(p.shadow, f"{metric}_s")
            if p.live.ok and p.shadow.ok and a is not None and b is not None:
                diffs.append(b - a)
        delta = _delta(metric, diffs, rng, resamples)
        if delta is not None:
            deltas.append(delta)
    texts = [
        (p.live.text.split(), p.shadow.text.split())
        for p in pairs
        if p.temperature_zero and p.live.text is not None and p.shadow.text is not None
    ]
    exact = edit = length = None
    if texts:
        exact = sum(a == b for a, b in texts) / len(texts)
        edit = sum(edit_distance(a, b) for a, b in texts) / len(texts)
        length = sum(len(b) - len(a) for a, b in texts) / len(texts)
    parts = [f"{n} pairs; errors {shadow_err:.2%} shadow vs {live_err:.2%} live"]
    for d in deltas:
        parts.append(
            f"{d.metric} {d.median_s * 1e3:+.1f} ms [{d.low_s * 1e3:+.1f}, {d.high_s * 1e3:+.1f}]"
        )
    if texts:
        parts.append(
            f"temperature 0: {exact:.0%} identical of {len(texts)}, edit distance {edit:.1f} "
            f"tokens, length {length:+.1f} tokens"
        )
    return ShadowReport(
        n, live_err, shadow_err, tuple(deltas), len(texts), exact, edit, length, "; ".join(parts)
    )
