"""The real packaged default model: GGUF conversion, cache reuse, and a known greedy answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipit.engine.loader import DEFAULT_MODEL, load_model
from support.reference import reference_greedy

pytestmark = pytest.mark.slow


def test_default_model_converts_caches_and_answers_paris(tmp_path: Path) -> None:
    home = tmp_path / "shipit-home"
    cold_log: list[str] = []
    cold = load_model(DEFAULT_MODEL, home=home, progress=cold_log.append)
    assert any("converting GGUF to safetensors" in line for line in cold_log)
    config = cold.config
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert config.vocab_size == 49152 and config.tie_word_embeddings
    assert config.rope_theta == 100000.0 and config.rms_norm_eps == 1e-5
    assert cold.tokenizer.eos_token_ids == (cold.tokenizer.token_to_id("<|im_end|>"),)

    warm_log: list[str] = []
    warm = load_model(DEFAULT_MODEL.upper(), home=home, progress=warm_log.append)
    assert not any("converting" in line for line in warm_log)
    assert warm.config == cold.config
    assert sorted(warm.weights) == sorted(cold.weights)
    for name, array in cold.weights.items():
        np.testing.assert_array_equal(array, warm.weights[name], err_msg=name)

    prompt = warm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    answer = reference_greedy(warm, warm.tokenizer.encode(prompt), max_new_tokens=12)
    assert "Paris" in warm.tokenizer.decode(answer)
