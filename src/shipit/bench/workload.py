"""Synthetic workloads: prompt and output lengths, shared prefixes, multi-turn sessions, LoRA mix.

Owns turning a ``WorkloadConfig`` into a list of ``Session`` records, deterministically from a
seed. Prompts are made of common English words, each of which is one token in the byte-level BPE
tokenizers of Llama 3, Qwen, GPT-2 and SmolLM, so ``input_tokens`` is close to (not exactly)
what the server counts; the server's ``usage`` is what the metrics report. Must not do IO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shipit.bench.config import WorkloadConfig
from shipit.bench.records import Session, Turn
from shipit.core.errors import InvalidRequestError

# Common words that are single tokens (with their leading space) in the usual BPE vocabularies.
_WORD_TEXT = """
    the of and to in is was for on that with as by at from his her they this had not are but
    which be one have an were all their has there been more when who will would so if no out
    other into some time only can could first new two year its about over them may then
    these him any than most after also made many did before must through back where much go
    well down should because each just those people how too little state good very make
    world still own see men work long get here between both life being under never day same
    another know while last might us great old off come since against came right used take
    three small large next early young important few public bad able open red blue green
    city water house light night river stone paper music table window garden market story
    friend family school money power field point line word place hand part child eye woman
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """Token counts: ``fixed:N``, ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA``."""

    kind: str
    a: float
    b: float = 0.0

    @staticmethod
    def parse(text: str, *, field: str) -> LengthSpec:
        kind, _, args = text.strip().partition(":")
        if not args:  # a bare number means fixed
            kind, args = "fixed", kind
        try:
            nums = [float(x) for x in args.split(",")]
        except ValueError:
            nums = []
        want = {"fixed": 1, "uniform": 2, "lognormal": 2}.get(kind)
        if (
            want is None
            or len(nums) != want
            or nums[0] < 1
            or (kind == "uniform" and nums[1] < nums[0])
        ):
            raise InvalidRequestError(
                f"{field}={text!r} is not a length; use N, fixed:N, uniform:LO,HI "
                "(LO<=HI) or lognormal:MEDIAN,SIGMA, all >= 1",
                field=field,
            )
        return LengthSpec(kind, nums[0], nums[1] if want == 2 else 0.0)

    def sample(self, rng: np.random.Generator, count: int) -> list[int]:
        if self.kind == "fixed":
            values = np.full(count, self.a)
        elif self.kind == "uniform":
            values = rng.integers(int(self.a), int(self.b) + 1, size=count)
        else:
            values = rng.lognormal(np.log(self.a), self.b, size=count)
        return [max(1, round(float(v))) for v in values]


def words(rng: np.random.Generator, count: int) -> str:
    """``count`` random words (about ``count`` tokens), space-separated."""
    idx = rng.integers(0, len(WORDS), size=count)
    return " ".join(WORDS[i] for i in idx)


def prefix_text(group: int, prefix_tokens: int, seed: int) -> str:
    """The shared prefix of ``group``: the same words for every request of that group."""
    return words(np.random.default_rng([seed, 7919, group]), prefix_tokens)


def parse_lora_mix(text: str) -> list[tuple[str, float]]:
    """``"a=0.3,b=0.2"`` -> [("a", 0.3), ("b", 0.2)]; the rest goes to the base model."""
    mix: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, share = part.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or not name or not 0 < value <= 1:
            raise InvalidRequestError(
                f"lora mix entry {part!r} is not NAME=SHARE with 0 < SHARE <= 1; "
                "example: --lora-mix 'sql=0.3,chat=0.2'",
                field="lora_mix",
            )
        mix.append((name.strip(), value))
    if sum(s for _, s in mix) > 1 + 1e-9:
        raise InvalidRequestError(
            f"lora mix shares add up to {sum(s for _, s in mix):.3f} > 1", field="lora_mix"
        )
    return mix


def pick_models(
    base_model: str, mix: list[tuple[str, float]], rng: np.random.Generator, count: int
) -> list[str]:
    names = [base_model] + [n for n, _ in mix]
    shares = [1.0 - sum(s for _, s in mix)] + [s for _, s in mix]
    idx = rng.choice(len(names), size=count, p=np.asarray(shares) / sum(shares))
    return [names[i] for i in idx]


def synthetic_sessions(cfg: WorkloadConfig, *, model: str, count: int, seed: int) -> list[Session]:
    """``count`` requests as ``ceil(count / turns)`` sessions of ``turns`` turns."""
    rng = np.random.default_rng(seed)
    turns = cfg.turns
    n_sessions = -(-count // turns)
    in_spec = LengthSpec.parse(cfg.input_tokens, field="input_tokens")
    out_spec = LengthSpec.parse(cfg.output_tokens, field="output_tokens")
    in_lens = in_spec.sample(rng, n_sessions * turns)
    out_lens = out_spec.sample(rng, n_sessions * turns)
    models = pick_models(model, parse_lora_mix(cfg.lora_mix), rng, n_sessions)
    groups = rng.integers(0, max(cfg.prefix_groups, 1), size=n_sessions)
    prefixes = [prefix_text(g, cfg.prefix_tokens, seed) for g in range(cfg.prefix_groups)]
    sessions: list[Session] = []
    for s in range(n_sessions):
        group = int(groups[s]) if cfg.prefix_groups > 0 and cfg.prefix_tokens > 0 else None
        made: list[Turn] = []
        for t in range(turns):
            if s * turns + t >= count:
                break
            n_in = in_lens[s * turns + t]
            body = words(rng, n_in)
            if group is not None and t == 0:
                body = prefixes[group] + " " + body
                n_in += cfg.prefix_tokens
            made.append(Turn(prompt=body, input_tokens=n_in, max_tokens=out_lens[s * turns + t]))
        sessions.append(Session(models[s], tuple(made), group, cfg.think_time_s))
    return sessions
