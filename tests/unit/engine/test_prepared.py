"""The prepared-weights cache: the engine's layout written once, memory-mapped after, keyed by
the source files, and a model served from it computes what the Hugging Face weights compute."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from tests.support.tiny_model import write_tiny_hf_model

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.model import LlamaModel, PagedKVCache
from shipit.engine.prepared import cache_file, prepared_weights
from shipit.engine.sampling import SamplingParams


def _prepared(loaded: LoadedModel, cache_dir: Path | None) -> tuple[dict[str, np.ndarray], str]:
    return prepared_weights(
        loaded.config, lambda: loaded.weights, sources=loaded.weight_files, cache_dir=cache_dir
    )


def _greedy(engine: LLMEngine, prompt: str) -> tuple[int, ...]:
    engine.add_request("r", prompt, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    tokens: list[int] = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens.extend(out.new_token_ids)
    return tuple(tokens)


@pytest.mark.parametrize(("tie", "bias"), [(True, False), (False, True)])
def test_second_start_maps_the_cache_and_generates_the_same(
    tmp_path: Path, tie: bool, bias: bool
) -> None:
    loaded = load_model(
        str(write_tiny_hf_model(tmp_path / "m", tie_word_embeddings=tie, attention_bias=bias))
    )
    first, how_first = _prepared(loaded, tmp_path / "cache")
    second, how_second = _prepared(loaded, tmp_path / "cache")
    assert (how_first, how_second) == ("prepared", "cache")
    assert set(first) == set(second)
    for name, array in first.items():
        np.testing.assert_array_equal(array, second[name], err_msg=name)
        assert not second[name].flags.writeable  # mapped read-only, never copied
    reference = LLMEngine.from_weights(loaded.config, loaded.weights, loaded.tokenizer)
    cached = LLMEngine.from_model(
        LlamaModel.from_prepared(loaded.config, second), loaded.tokenizer, EngineConfig()
    )
    assert _greedy(cached, "hello world") == _greedy(reference, "hello world")


def test_a_changed_source_is_prepared_again_and_replaces_the_old_file(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    loaded = load_model(str(model_dir))
    cache = tmp_path / "cache"
    _prepared(loaded, cache)
    old = cache_file(cache, loaded.weight_files)
    weights = model_dir / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    new = cache_file(cache, loaded.weight_files)
    assert new != old and new.parent == old.parent
    assert _prepared(loaded, cache)[1] == "prepared"
    assert sorted(p.name for p in new.parent.iterdir()) == sorted([new.name, "sources.txt"])


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path: Path) -> None:
    loaded = load_model(str(write_tiny_hf_model(tmp_path / "m")))
    cache = tmp_path / "cache"
    path = cache_file(cache, loaded.weight_files)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert _prepared(loaded, cache)[1] == "prepared"
    assert _prepared(loaded, cache)[1] == "cache"


def test_without_a_writable_cache_the_start_goes_on(tmp_path: Path) -> None:
    loaded = load_model(str(write_tiny_hf_model(tmp_path / "m")))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    weights, how = _prepared(loaded, blocked / "cache")
    assert how == "prepared" and "embed" in weights
    assert _prepared(loaded, None)[1] == "prepared"


def test_kv_cache_starts_zeroed_and_writable(tmp_path: Path) -> None:
    config = load_model(str(write_tiny_hf_model(tmp_path / "m"))).config
    cache = PagedKVCache(config, num_blocks=3, block_size=4)
    assert cache.k.shape == cache.v.shape and cache.k.dtype == np.float32
    assert not cache.k.any() and not cache.v.any()
    cache.k[0, 1] = 1.5
    assert cache.k[0, 1].sum() == 1.5 * config.num_kv_heads * config.head_dim


def test_files_of_models_whose_sources_are_gone_are_pruned(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gone = load_model(str(write_tiny_hf_model(tmp_path / "gone")))
    kept = load_model(str(write_tiny_hf_model(tmp_path / "kept", seed=1)))
    _prepared(gone, cache)
    _prepared(kept, cache)
    gone_dir = cache_file(cache, gone.weight_files).parent
    kept_dir = cache_file(cache, kept.weight_files).parent
    for file in (tmp_path / "gone").iterdir():
        file.unlink()
    assert gone_dir.is_dir()  # nothing is deleted until a model is prepared again
    _prepared(load_model(str(write_tiny_hf_model(tmp_path / "third", seed=2))), cache)
    assert not gone_dir.exists() and kept_dir.is_dir()
