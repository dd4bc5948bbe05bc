"""Penalties and logit_bias with OpenAI's meaning, on hand-computed rows; in the engine, a bias
forces a token and a frequency penalty breaks a greedy loop; range checks name the parameter."""

from __future__ import annotations

import numpy as np
import pytest

from shipit.core.errors import InvalidRequestError
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.logits import TokenCounts, adjust_batch, adjust_logits
from shipit.engine.sampling import SamplingParams
from support.engine_harness import engine_for, run
from support.tiny_model import write_tiny_hf_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")))


def counts_of(*tokens: int) -> TokenCounts:
    c = TokenCounts()
    for t in tokens:
        c.add(t)
    return c


def test_penalties_follow_openai_formula() -> None:
    row = np.zeros(5, dtype=np.float32)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    out = adjust_logits(row, params, counts_of(1, 1, 1, 3), None)
    # token 1 seen 3 times: 3*0.5 + 1.0; token 3 once: 0.5 + 1.0; the rest untouched.
    np.testing.assert_array_equal(out, [0.0, -2.5, 0.0, -1.5, 0.0])


def test_negative_penalties_encourage_repeats() -> None:
    out = adjust_logits(
        np.zeros(3, np.float32), SamplingParams(presence_penalty=-2.0), counts_of(2), None
    )
    np.testing.assert_array_equal(out, [0.0, 0.0, 2.0])


def test_bias_then_mask() -> None:
    row = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    params = SamplingParams(logit_bias=((0, 100.0), (3, -100.0)))
    allowed = np.array([True, True, False, True])
    out = adjust_logits(row, params, TokenCounts(), allowed)
    np.testing.assert_array_equal(out, [101.0, 2.0, -np.inf, -96.0])


def test_rows_that_adjust_nothing_are_not_copied() -> None:
    logits = np.ones((2, 3), dtype=np.float32)
    plain = [SamplingParams(), SamplingParams()]
    assert adjust_batch(logits, plain, [TokenCounts(), TokenCounts()], [None, None]) is logits
    biased = [SamplingParams(), SamplingParams(logit_bias=((1, 5.0),))]
    out = adjust_batch(logits, biased, [TokenCounts(), TokenCounts()], [None, None])
    np.testing.assert_array_equal(out, [[1, 1, 1], [1, 6, 1]])
    np.testing.assert_array_equal(logits, np.ones((2, 3)))  # the model's output is untouched


def test_a_bias_of_100_forces_the_token_in_the_engine(tiny: LoadedModel) -> None:
    params = SamplingParams(max_tokens=5, temperature=1.0, seed=1, logit_bias=((65, 100.0),))
    assert run(engine_for(tiny), {"r": [5, 6]}, params)["r"] == [65] * 5


def test_a_frequency_penalty_changes_a_greedy_loop(tiny: LoadedModel) -> None:
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    plain = run(engine_for(tiny), {"r": [5, 6]}, greedy)["r"]
    penalised = SamplingParams(
        max_tokens=12, temperature=0.0, ignore_eos=True, frequency_penalty=2.0
    )
    out = run(engine_for(tiny), {"r": [5, 6]}, penalised)["r"]
    assert len(set(out)) > len(set(plain))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"presence_penalty": 2.01}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"logit_bias": ((1, 100.5),)}, "logit_bias"),
        ({"logit_bias": ((-1, 1.0),)}, "logit_bias"),
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        SamplingParams(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_bias_outside_the_vocabulary_is_refused_by_the_engine(tiny: LoadedModel) -> None:
    engine = engine_for(tiny)
    with pytest.raises(InvalidRequestError) as err:
        engine.add_request("r", [5], SamplingParams(logit_bias=((10_000, 1.0),)))
    assert err.value.field == "logit_bias"
