"""The engine against a dense reference: paging, batching, chunked prefill, preemption,
prefix caching and LoRA must not change a single logit (beyond float32 noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipit.core.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelLoadError,
    UnknownAdapterError,
)
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.model import F32
from shipit.engine.sampling import SamplingParams
from support.engine_harness import GREEDY, Recorder, engine_for, prompts_of, run
from support.reference import reference_logits_from
from support.tiny_model import write_tiny_hf_model

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m", kv_heads=2, heads=4)
    return load_model(str(path))


def check_against_reference(
    model: LoadedModel,
    weights: dict[str, F32],
    prompt: list[int],
    generated: list[int],
    logits: list[F32],
) -> None:
    full = prompt + generated
    ref = reference_logits_from(model.config, weights, full[:-1])
    got = np.stack(logits)
    want = ref[len(prompt) - 1 :]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert generated == [int(t) for t in np.argmax(want, axis=-1)]


def test_batched_paged_decoding_equals_dense_reference(tiny: LoadedModel) -> None:
    # Small token budget forces chunked prefill; a small cache forces preemption.
    block_bytes = tiny.config.kv_bytes_per_token * 4
    engine = engine_for(tiny, max_num_batched_tokens=16, kv_cache_bytes=24 * block_bytes)
    rec = Recorder(engine)
    prompts = prompts_of([3, 17, 30, 9, 1, 22])
    out = run(engine, prompts, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    assert engine.stats().num_preemptions > 0, "the test must exercise preemption"
    assert rec.partial_prefills > 0, "the test must exercise chunked prefill"
    for rid, prompt in prompts.items():
        check_against_reference(tiny, tiny.weights, prompt, out[rid], rec.logits[rid])


def test_a_prefix_cache_hit_gives_the_same_logits_as_a_cold_run(tiny: LoadedModel) -> None:
    engine = engine_for(tiny)
    rec = Recorder(engine)
    prompt = prompts_of([27])["r0"]
    cold = run(engine, {"cold": prompt})
    stats_before = engine.stats().prefix_cache_hits
    warm = run(engine, {"warm": [*prompt]})
    assert engine.stats().prefix_cache_hits - stats_before == 24
    assert cold["cold"] == warm["warm"]
    np.testing.assert_allclose(rec.logits["warm"], rec.logits["cold"], atol=1e-5, rtol=0)


def test_requests_join_a_running_batch_and_still_match(tiny: LoadedModel) -> None:
    engine = engine_for(tiny, max_num_batched_tokens=8)
    rec = Recorder(engine)
    first = prompts_of([5], seed=3)
    engine.add_request("r0", first["r0"], GREEDY)
    engine.step()
    engine.step()
    late = prompts_of([13], seed=4)["r0"]
    out = run(engine, {"late": late})
    check_against_reference(tiny, tiny.weights, late, out["late"], rec.logits["late"])


def test_same_seed_same_tokens_alone_or_batched(tiny: LoadedModel) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, seed=7, ignore_eos=True)
    prompt = prompts_of([11])["r0"]
    alone = run(engine_for(tiny), {"a": prompt}, params)["a"]
    batch = prompts_of([4, 19, 7], seed=9) | {"a": prompt}
    batched = run(engine_for(tiny), batch, params)["a"]
    assert alone == batched


def test_stop_string_max_tokens_and_text(tiny: LoadedModel) -> None:
    engine = engine_for(tiny)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    [(tokens, text)] = engine.generate(["hello world"], params)
    assert len(tokens) == 8
    assert text == tiny.tokenizer.decode(tokens)
    stop = text[2:5]
    if stop.strip():
        [(_, cut)] = engine_for(tiny).generate(
            ["hello world"],
            SamplingParams(temperature=0.0, max_tokens=8, stop=(stop,), ignore_eos=True),
        )
        assert cut == text[: text.index(stop)]


def test_abort_frees_every_block(tiny: LoadedModel) -> None:
    engine = engine_for(tiny)
    engine.add_request("x", prompts_of([30])["r0"], GREEDY)
    engine.step()
    assert engine.stats().kv_cache_usage_perc > 0
    assert engine.abort("x")
    assert engine.stats().kv_cache_usage_perc == 0
    assert not engine.has_unfinished_requests()
    assert not engine.abort("x")


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"prompt": list(range(1, 300))}, ContextLengthError, "prompt"),
        ({"prompt": []}, InvalidRequestError, "prompt"),
        ({"prompt": [1, 100000]}, InvalidRequestError, "prompt"),
        ({"lora_name": "nope"}, UnknownAdapterError, "model"),
    ],
)
def test_bad_requests_fail_before_queueing(
    tiny: LoadedModel, kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    engine = engine_for(tiny)
    prompt = kwargs.pop("prompt", [1, 2, 3])
    with pytest.raises(error) as info:
        engine.add_request("bad", prompt, GREEDY, **kwargs)  # type: ignore[arg-type]
    assert getattr(info.value, "field", None) == field
    assert not engine.has_unfinished_requests()


def test_context_error_names_both_lengths(tiny: LoadedModel) -> None:
    engine = engine_for(tiny)
    expected = r"maximum context length is 256 tokens; your request has 299 tokens in the prompt"
    with pytest.raises(ContextLengthError, match=expected):
        engine.add_request("long", list(range(1, 300)), GREEDY)


def test_unreadable_model_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(str(missing))
