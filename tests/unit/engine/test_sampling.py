"""Sampling: parameter validation, greedy/seeded/truncated draws, logprobs, stop strings."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipit.core.errors import InvalidRequestError
from shipit.engine.sampling import (
    SampleResult,
    SamplingParams,
    StopStringMatcher,
    make_generator,
    sample,
)

VOCAB = 1000


def _logits(n: int, *, seed: int = 0, vocab: int = VOCAB, spread: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, vocab)) * spread).astype(np.float32)


def _log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    m = x.max()
    out: np.ndarray = x - m - np.log(np.exp(x - m).sum())
    return out


def _run(logits: np.ndarray, params: list[SamplingParams], seeds: list[int | None]) -> list[int]:
    gens = [make_generator(s) for s in seeds]
    return [r.token_id for r in sample(logits, params, gens)]


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"stop": ("",)}, "stop"),
        ({"stop": tuple(f"s{i}" for i in range(9))}, "stop"),
        ({"stop": (1, 2)}, "stop"),
        ({"stop_token_ids": (-1,)}, "stop_token_ids"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 21}, "logprobs"),
        ({"ignore_eos": "yes"}, "ignore_eos"),
    ],
)
def test_invalid_parameter_names_field_and_value(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs)
    assert info.value.field == field
    assert field in info.value.message
    if field != "stop":  # the stop messages show the list or the count, not one value
        assert repr(next(iter(kwargs.values()))) in info.value.message


def test_too_many_stop_strings_says_the_limit() -> None:
    with pytest.raises(InvalidRequestError, match="at most 8"):
        SamplingParams(stop=tuple(str(i) for i in range(9)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 1e-9},
        {"top_k": 1},
        {"seed": 0},
        {"seed": 2**63},
        {"logprobs": 0},
        {"logprobs": 20},
        {"stop": tuple(str(i) for i in range(8))},
    ],
)
def test_valid_parameters_accepted(kwargs: dict[str, Any]) -> None:
    SamplingParams(**kwargs)


def test_lists_from_json_become_tuples() -> None:
    params = SamplingParams(stop=["a", "b"], stop_token_ids=[1, 2])  # type: ignore[arg-type]
    assert params.stop == ("a", "b")
    assert params.stop_token_ids == (1, 2)
    assert SamplingParams(stop="###").stop == ("###",)  # type: ignore[arg-type]
    hash(params)


# --- sampling ----------------------------------------------------------------------------


def test_greedy_is_exact_argmax_and_uses_no_randomness() -> None:
    logits = _logits(6)
    gens = [make_generator(i) for i in range(6)]
    before = [g.bit_generator.state for g in gens]
    results = sample(logits, [SamplingParams(temperature=0)] * 6, gens)
    assert [r.token_id for r in results] == list(np.argmax(logits, axis=1))
    assert [g.bit_generator.state for g in gens] == before
    assert all(isinstance(r, SampleResult) and r.logprob is None for r in results)


def test_greedy_ties_go_to_lowest_id_like_argmax() -> None:
    logits = np.zeros((1, 10), dtype=np.float32)
    logits[0, [3, 7]] = 5.0
    for params in (
        SamplingParams(temperature=0),
        SamplingParams(top_k=1),
        SamplingParams(top_p=1e-6),
        SamplingParams(top_k=2, top_p=1e-6),
    ):
        assert _run(logits, [params], [0]) == [3]


def test_seeded_request_same_alone_and_in_any_batch() -> None:
    steps = 20
    logits = [_logits(5, seed=s) for s in range(steps)]
    target = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, seed=1234)
    others = [
        SamplingParams(temperature=1.3),
        SamplingParams(temperature=0),
        SamplingParams(top_p=0.5, logprobs=3),
        SamplingParams(top_k=5, temperature=0.3),
    ]

    alone_gen = make_generator(1234)
    alone = [sample(lg[2:3], [target], [alone_gen])[0] for lg in logits]

    batch_gens = [make_generator(s) for s in (7, None, 1234, 9, 11)]
    batched = []
    for lg in logits:
        params = [others[0], others[1], target, others[2], others[3]]
        batched.append(sample(lg, params, batch_gens)[2])
    assert [r.token_id for r in alone] == [r.token_id for r in batched]
    assert len({r.token_id for r in alone}) > 1  # really random, not a degenerate argmax


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    logits = _logits(1, spread=1.0)
    params = [SamplingParams(temperature=1.0)]

    def run(seed: int) -> list[int]:
        gen = make_generator(seed)
        return [sample(logits, params, [gen])[0].token_id for _ in range(30)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_top_k_keeps_only_the_k_best() -> None:
    logits = _logits(1, spread=0.1)  # nearly flat: without top_k anything could come out
    best = set(np.argsort(-logits[0])[:5].tolist())
    gen = make_generator(0)
    drawn = {sample(logits, [SamplingParams(top_k=5)], [gen])[0].token_id for _ in range(300)}
    assert drawn == best


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(probs).astype(np.float32)[None, :]
    gen = make_generator(0)
    # 0.5 + 0.3 = 0.8 >= 0.79: exactly two tokens, never the third.
    drawn = [sample(logits, [SamplingParams(top_p=0.79)], [gen])[0].token_id for _ in range(500)]
    assert set(drawn) == {0, 1}
    # 0.81 needs the third token too.
    drawn = [sample(logits, [SamplingParams(top_p=0.81)], [gen])[0].token_id for _ in range(500)]
    assert set(drawn) == {0, 1, 2}


def test_top_p_on_a_large_heavy_tailed_vocabulary() -> None:
    vocab = 49_152
    rng = np.random.default_rng(3)
    zipf = (-1.1 * np.log(np.arange(1, vocab + 1)))[rng.permutation(vocab)]
    logits = zipf.astype(np.float32)[None, :]
    probs = np.exp(_log_softmax(logits[0]))
    order = np.argsort(-probs, kind="stable")
    nucleus = set(order[: int(np.searchsorted(np.cumsum(probs[order]), 0.9)) + 1].tolist())
    assert len(nucleus) > 4096  # exercises the path that grows past the first guesses
    gen = make_generator(0)
    for _ in range(50):
        assert sample(logits, [SamplingParams(top_p=0.9)], [gen])[0].token_id in nucleus


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), [0.1, 0.2, 0.3, 0.4]),
        (SamplingParams(temperature=2.0), list(np.sqrt([0.1, 0.2, 0.3, 0.4]))),
        (SamplingParams(top_k=2), [0, 0, 3 / 7, 4 / 7]),
        (SamplingParams(top_p=0.65), [0, 0, 3 / 7, 4 / 7]),
    ],
)
def test_draw_frequencies_match_the_distribution(
    params: SamplingParams, expected: list[float]
) -> None:
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]])).astype(np.float32)
    gen = make_generator(42)
    draws = 4000
    counts = np.bincount(
        [sample(logits, [params], [gen])[0].token_id for _ in range(draws)], minlength=4
    )
    expected_arr = np.array(expected) / np.sum(expected)
    # 4 standard deviations of a binomial proportion: a fixed seed, so never flaky.
    tolerance = 4 * np.sqrt(expected_arr * (1 - expected_arr) / draws) + 1e-9
    assert np.all(np.abs(counts / draws - expected_arr) <= tolerance), counts


def test_large_vocabulary_untruncated_draw_frequencies() -> None:
    # Mass spread over blocks of the vocabulary: exercises the blocked inverse-CDF draw.
    vocab = 5000
    logits = np.full((1, vocab), -np.inf, dtype=np.float32)
    hot = [3, 1500, 1501, 4999]
    logits[0, hot] = np.log([0.25, 0.25, 0.25, 0.25])
    gen = make_generator(1)
    drawn = [sample(logits, [SamplingParams()], [gen])[0].token_id for _ in range(2000)]
    counts = np.array([drawn.count(t) for t in hot])
    assert counts.sum() == 2000
    assert np.all(np.abs(counts / 2000 - 0.25) < 0.05), counts


def test_logprobs_are_log_softmax_of_raw_logits() -> None:
    logits = _logits(3, seed=9)
    params = [
        SamplingParams(temperature=0, logprobs=5),
        SamplingParams(temperature=0.5, logprobs=0),
        SamplingParams(temperature=1.0),
    ]
    results = sample(logits, params, [make_generator(i) for i in range(3)])
    for row, (res, p) in enumerate(zip(results, params, strict=True)):
        if p.logprobs is None:
            assert res.logprob is None and res.top_logprobs is None
            continue
        ref = _log_softmax(logits[row])
        assert res.logprob == pytest.approx(ref[res.token_id], abs=1e-6)
        assert res.top_logprobs is not None and len(res.top_logprobs) == p.logprobs
        top_ids = list(np.argsort(-logits[row], kind="stable")[: p.logprobs])
        assert [t for t, _ in res.top_logprobs] == top_ids
        for tok, lp in res.top_logprobs:
            assert lp == pytest.approx(ref[tok], abs=1e-6)
    # Greedy: the chosen token is the top alternative.
    first = results[0].top_logprobs
    assert first is not None and first[0][0] == results[0].token_id


def test_masked_row_falls_back_to_argmax() -> None:
    logits = np.full((1, 8), -np.inf, dtype=np.float32)
    assert _run(logits, [SamplingParams()], [0]) == [0]


def test_shape_mismatch_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="one SamplingParams"):
        sample(_logits(2), [SamplingParams()], [make_generator(0)])
    with pytest.raises(ValueError, match="2-D"):
        sample(np.zeros(4, dtype=np.float32), [SamplingParams()], [make_generator(0)])
    assert sample(np.zeros((0, 4), dtype=np.float32), [], []) == []


# --- stop strings --------------------------------------------------------------------------


def _feed(matcher: StopStringMatcher, deltas: list[str]) -> tuple[str, bool]:
    out = []
    for d in deltas:
        text, stopped = matcher.push(d)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_split_across_deltas_is_held_then_cut() -> None:
    m = StopStringMatcher(["###"])
    assert m.push("Hello #") == ("Hello ", False)
    assert m.push("#") == ("", False)
    assert m.push("# and more") == ("", True)
    assert m.stopped
    assert m.push("later") == ("", True)
    assert m.flush() == ""


def test_partial_match_that_is_not_a_stop_is_released() -> None:
    m = StopStringMatcher(["</end>"])
    assert m.push("a </e") == ("a ", False)
    assert m.push("x") == ("</ex", False)
    assert m.push("</en") == ("", False)
    assert m.flush() == "</en"


def test_multiple_stops_first_to_complete_wins() -> None:
    assert _feed(StopStringMatcher(["STOP", "END"]), ["one EN", "D two STOP"]) == ("one ", True)
    # "b" completes before "abc" could: the cut is at "b".
    assert _feed(StopStringMatcher(["abc", "b"]), ["xab", "c"]) == ("xa", True)
    # Both end at the same place: the longer one wins (cut at its start).
    assert _feed(StopStringMatcher(["c", "abc"]), ["xabc"]) == ("x", True)


def test_no_stops_passes_everything_through() -> None:
    m = StopStringMatcher([])
    assert m.push("abc") == ("abc", False)
    assert m.flush() == ""


def test_empty_stop_string_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        StopStringMatcher(["ok", ""])
    assert info.value.field == "stop"


def _expected_output(text: str, stops: list[str]) -> tuple[str, bool]:
    """Oracle: scan ends left to right; at the first end where a stop completes, cut there."""
    for end in range(1, len(text) + 1):
        for s in sorted(stops, key=len, reverse=True):
            if text[:end].endswith(s):
                return text[: end - len(s)], True
    return text, False


_ALPHABET = "ab#\n"


@given(
    text=st.text(alphabet=_ALPHABET, max_size=40),
    stops=st.lists(st.text(alphabet=_ALPHABET, min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=10),
)
def test_emitted_text_is_input_up_to_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    deltas = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _feed(StopStringMatcher(stops), deltas) == _expected_output(text, stops)
