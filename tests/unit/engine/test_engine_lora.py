"""Multi-LoRA in the engine: an adapter request equals the merged-weights model, adapters
share a batch with base requests, and the prefix cache never crosses adapters or salts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipit.engine.engine import LLMEngine
from shipit.engine.loader import LoadedModel, load_model
from support.engine_harness import GREEDY, Recorder, engine_for, prompts_of, run
from support.tiny_lora import merge_lora, write_tiny_lora
from support.tiny_model import write_tiny_hf_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")))


@pytest.fixture(scope="module")
def adapters(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "attn": write_tiny_lora(
            root / "attn",
            tiny.config,
            rank=4,
            alpha=8,
            seed=1,
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        ),
        "mlp": write_tiny_lora(
            root / "mlp",
            tiny.config,
            rank=8,
            alpha=16,
            seed=2,
            target_modules=("gate_proj", "up_proj", "down_proj"),
        ),
    }


def merged_engine(tiny: LoadedModel, path: Path, name: str) -> LLMEngine:
    adapter = engine_for(tiny).load_lora(name, str(path))
    weights = merge_lora(tiny.weights, adapter)
    return LLMEngine.from_weights(tiny.config, weights, tiny.tokenizer, engine_for(tiny).config)


def test_lora_requests_equal_the_merged_model_in_a_mixed_batch(
    tiny: LoadedModel, adapters: dict[str, Path]
) -> None:
    engine = engine_for(tiny, max_num_batched_tokens=16)
    for name, path in adapters.items():
        engine.load_lora(name, str(path))
    rec = Recorder(engine)
    prompts = prompts_of([9, 14, 6], seed=5)
    for rid, lora in zip(prompts, ["attn", "mlp", None], strict=True):
        engine.add_request(rid, prompts[rid], GREEDY, lora_name=lora)
    out: dict[str, list[int]] = {rid: [] for rid in prompts}
    while engine.has_unfinished_requests():
        for o in engine.step():
            out[o.request_id].extend(o.new_token_ids)
    for rid, lora in zip(prompts, ["attn", "mlp", None], strict=True):
        ref_engine = merged_engine(tiny, adapters[lora], lora) if lora else engine_for(tiny)
        ref = Recorder(ref_engine)
        ref_out = run(ref_engine, {rid: prompts[rid]})
        assert out[rid] == ref_out[rid]
        np.testing.assert_allclose(rec.logits[rid], ref.logits[rid], atol=1e-4, rtol=0)


def test_an_adapter_changes_the_output(tiny: LoadedModel, adapters: dict[str, Path]) -> None:
    engine = engine_for(tiny)
    engine.load_lora("attn", str(adapters["attn"]))
    rec = Recorder(engine)
    prompt = prompts_of([12])["r0"]
    run(engine, {"base": prompt})
    run(engine, {"lora": prompt}, lora_name="attn")
    assert np.abs(rec.logits["base"][0] - rec.logits["lora"][0]).max() > 1e-3


def test_prefix_cache_is_isolated_by_adapter_and_salt(
    tiny: LoadedModel, adapters: dict[str, Path]
) -> None:
    engine = engine_for(tiny)
    engine.load_lora("attn", str(adapters["attn"]))
    prompt = prompts_of([21])["r0"]
    cached: dict[str, int] = {}
    for rid, kw in [
        ("base", {}),
        ("lora", {"lora_name": "attn"}),
        ("salted", {"cache_salt": "tenant-a"}),
        ("base2", {}),
        ("lora2", {"lora_name": "attn"}),
        ("salted2", {"cache_salt": "tenant-a"}),
        ("other-salt", {"cache_salt": "tenant-b"}),
    ]:
        engine.add_request(rid, prompt, GREEDY, **kw)
        while engine.has_unfinished_requests():
            for o in engine.step():
                cached[o.request_id] = o.num_cached_tokens
    assert cached["base"] == cached["lora"] == cached["salted"] == cached["other-salt"] == 0
    assert cached["base2"] == cached["lora2"] == cached["salted2"] == 20


def test_loaded_adapters_are_capped_with_lru(tiny: LoadedModel, adapters: dict[str, Path]) -> None:
    engine = engine_for(tiny, max_loras=1)
    engine.load_lora("attn", str(adapters["attn"]))
    engine.load_lora("mlp", str(adapters["mlp"]))
    assert engine.stats().loaded_loras == ("mlp",)


def test_reloading_an_adapter_name_from_another_path_never_reuses_its_old_kv(
    tiny: LoadedModel, adapters: dict[str, Path]
) -> None:
    """The prefix cache keys blocks by adapter *name*: after ``a`` is unloaded and loaded
    again with other weights, its old blocks must not serve a hit."""
    prompt = prompts_of([21])["r0"]
    engine = engine_for(tiny)
    engine.load_lora("a", str(adapters["attn"]))
    run(engine, {"first": prompt}, lora_name="a")
    engine.unload_lora("a")
    engine.load_lora("a", str(adapters["mlp"]))
    rec = Recorder(engine)
    got = run(engine, {"again": prompt}, lora_name="a")
    fresh = engine_for(tiny)
    fresh.load_lora("a", str(adapters["mlp"]))
    ref = Recorder(fresh)
    want = run(fresh, {"again": prompt}, lora_name="a")
    assert got == want
    np.testing.assert_allclose(rec.logits["again"], ref.logits["again"], atol=1e-4, rtol=0)


def test_an_adapter_evicted_by_the_cap_drops_its_cached_prefixes(
    tiny: LoadedModel, adapters: dict[str, Path]
) -> None:
    prompt = prompts_of([21])["r0"]
    engine = engine_for(tiny, max_loras=1)
    engine.load_lora("a", str(adapters["attn"]))
    run(engine, {"first": prompt}, lora_name="a")
    engine.load_lora("b", str(adapters["mlp"]))  # evicts "a"
    engine.load_lora("a", str(adapters["mlp"]))  # "a" now means other weights; evicts "b"
    cached: list[int] = []
    engine.add_request("again", prompt, GREEDY, lora_name="a")
    while engine.has_unfinished_requests():
        cached += [o.num_cached_tokens for o in engine.step()]
    assert cached and max(cached) == 0
