"""Synthetic workloads: length distributions, shared prefixes, sessions, LoRA mix."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from shipit.bench.config import WorkloadConfig
from shipit.bench.workload import WORDS, LengthSpec, parse_lora_mix, synthetic_sessions
from shipit.core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("128", LengthSpec("fixed", 128)),
        ("fixed:7", LengthSpec("fixed", 7)),
        ("uniform:4,9", LengthSpec("uniform", 4, 9)),
        ("lognormal:100,0.5", LengthSpec("lognormal", 100, 0.5)),
    ],
)
def test_length_specs_parse(text: str, spec: LengthSpec) -> None:
    assert LengthSpec.parse(text, field="x") == spec


@pytest.mark.parametrize("text", ["", "zero", "uniform:9,4", "normal:3,1", "0", "lognormal:5"])
def test_bad_length_specs_say_what_is_allowed(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="uniform:LO,HI") as err:
        LengthSpec.parse(text, field="input_tokens")
    assert err.value.field == "input_tokens"


def test_samples_respect_the_distribution() -> None:
    rng = np.random.default_rng(0)
    assert set(LengthSpec("fixed", 5).sample(rng, 10)) == {5}
    uniform = LengthSpec("uniform", 4, 9).sample(rng, 2000)
    assert min(uniform) == 4 and max(uniform) == 9
    lognormal = LengthSpec("lognormal", 100, 0.5).sample(rng, 4000)
    assert float(np.median(lognormal)) == pytest.approx(100, rel=0.05)
    assert min(lognormal) >= 1


def test_prompts_have_the_asked_number_of_words() -> None:
    sessions = synthetic_sessions(
        WorkloadConfig(input_tokens="50", output_tokens="7"), model="m", count=5, seed=1
    )
    assert len(sessions) == 5
    for s in sessions:
        (turn,) = s.turns
        assert len(turn.prompt.split()) == 50 and turn.input_tokens == 50 and turn.max_tokens == 7
        assert set(turn.prompt.split()) <= set(WORDS)


def test_shared_prefixes_are_shared_within_a_group_only() -> None:
    cfg = WorkloadConfig(input_tokens="10", prefix_groups=3, prefix_tokens=20)
    sessions = synthetic_sessions(cfg, model="m", count=60, seed=2)
    by_group: dict[int, set[str]] = {}
    for s in sessions:
        assert s.prefix_group is not None
        words = s.turns[0].prompt.split()
        assert len(words) == 30 and s.turns[0].input_tokens == 30
        by_group.setdefault(s.prefix_group, set()).add(" ".join(words[:20]))
    assert len(by_group) == 3
    assert all(len(prefixes) == 1 for prefixes in by_group.values())
    assert len({p for ps in by_group.values() for p in ps}) == 3


def test_sessions_have_turns_and_the_request_count_is_exact() -> None:
    cfg = WorkloadConfig(turns=3, think_time_s=0.5)
    sessions = synthetic_sessions(cfg, model="m", count=10, seed=0)
    assert [len(s.turns) for s in sessions] == [3, 3, 3, 1]
    assert all(s.think_time_s == 0.5 for s in sessions)


def test_lora_mix_shares() -> None:
    assert parse_lora_mix("a=0.3, b=0.2") == [("a", 0.3), ("b", 0.2)]
    cfg = WorkloadConfig(lora_mix="a=0.3,b=0.2")
    counts = Counter(s.model for s in synthetic_sessions(cfg, model="base", count=5000, seed=0))
    assert counts["a"] / 5000 == pytest.approx(0.3, abs=0.03)
    assert counts["b"] / 5000 == pytest.approx(0.2, abs=0.03)
    assert counts["base"] / 5000 == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("text", ["a", "a=2", "a=x", "=0.1", "a=0.7,b=0.6"])
def test_bad_lora_mix(text: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        parse_lora_mix(text)
    assert err.value.field == "lora_mix"
