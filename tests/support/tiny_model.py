"""Tiny random Llama checkpoints written inside a test's tmp_path, as HF directories or GGUF.

Both writers produce the same model for the same arguments (weights from ``seed``, a small
real byte-level BPE tokenizer trained on a fixed corpus, a ChatML chat template), so a test
can check that the GGUF path and the safetensors path load to identical weights. The GGUF
writer applies llama.cpp's Q/K row permutation exactly as its converter does. Tests only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from gguf import GGUFWriter
from safetensors.numpy import save_file
from tokenizers import decoders, models, pre_tokenizers, trainers

from shipit.engine.gguf_import import permute_rotary

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_TOKEN_ID = 1  # <|im_start|>, as in SmolLM2
EOS_TOKEN_ID = 2  # <|im_end|>

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "hello world, héllo wörld, 世界 你好, emoji 🚀 and numbers 12345 67890.",
    "def main():\n    return 42\n\nclass Model:\n    pass\n",
    "A quick brown fox jumps over the lazy dog while the cat sleeps.",
] * 4

_GGUF_BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GGUF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


@dataclass(frozen=True, slots=True)
class TinyCheckpoint:
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    tokenizer: tokenizers.Tokenizer


def tiny_tokenizer(vocab_size: int) -> tokenizers.Tokenizer:
    """A real byte-level BPE (SmolLM-style pre-tokenizer) with exactly ``vocab_size`` ids."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet + specials")
    # Pad like real checkpoints do, so the embedding rows and the token list agree.
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(vocab_size - size)])
    return tok


def tiny_checkpoint(
    *,
    seed: int = 0,
    vocab_size: int = 384,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    tie_word_embeddings: bool = True,
    attention_bias: bool = False,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 256,
) -> TinyCheckpoint:
    """Config, random weights (HF names and layout) and tokenizer of a tiny Llama."""
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads

    def normal(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    weights = {
        "model.embed_tokens.weight": normal(vocab_size, hidden, std=0.1),
        "model.norm.weight": 1.0 + normal(hidden, std=0.1),
    }
    if not tie_word_embeddings:
        weights["lm_head.weight"] = normal(vocab_size, hidden, std=hidden**-0.5)
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    for i in range(layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": 1.0 + normal(hidden, std=0.1),
            p + "self_attn.q_proj.weight": normal(q_out, hidden, std=hidden**-0.5),
            p + "self_attn.k_proj.weight": normal(kv_out, hidden, std=hidden**-0.5),
            p + "self_attn.v_proj.weight": normal(kv_out, hidden, std=hidden**-0.5),
            p + "self_attn.o_proj.weight": normal(hidden, q_out, std=q_out**-0.5),
            p + "post_attention_layernorm.weight": 1.0 + normal(hidden, std=0.1),
            p + "mlp.gate_proj.weight": normal(intermediate, hidden, std=hidden**-0.5),
            p + "mlp.up_proj.weight": normal(intermediate, hidden, std=hidden**-0.5),
            p + "mlp.down_proj.weight": normal(hidden, intermediate, std=intermediate**-0.5),
        }
        if attention_bias:
            weights |= {
                p + "self_attn.q_proj.bias": normal(q_out, std=0.1),
                p + "self_attn.k_proj.bias": normal(kv_out, std=0.1),
                p + "self_attn.v_proj.bias": normal(kv_out, std=0.1),
            }
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tie_word_embeddings,
        "attention_bias": attention_bias,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "torch_dtype": "float32",
    }
    return TinyCheckpoint(config=config, weights=weights, tokenizer=tiny_tokenizer(vocab_size))


def write_tiny_hf_model(
    path: Path,
    *,
    seed: int = 0,
    vocab_size: int = 384,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    tie_word_embeddings: bool = True,
    attention_bias: bool = False,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 256,
    shards: int = 1,
) -> Path:
    """Write a tiny Llama as a HF directory at ``path``; ``shards > 1`` writes an index too."""
    ckpt = tiny_checkpoint(
        seed=seed,
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        tie_word_embeddings=tie_word_embeddings,
        attention_bias=attention_bias,
        rope_theta=rope_theta,
        max_position_embeddings=max_position_embeddings,
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(ckpt.config, indent=2), encoding="utf-8")
    ckpt.tokenizer.save(str(path / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[BOS_TOKEN_ID],
        "eos_token": SPECIAL_TOKENS[EOS_TOKEN_ID],
        "chat_template": CHATML_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    if shards <= 1:
        save_file(ckpt.weights, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path
    names = sorted(ckpt.weights)
    weight_map: dict[str, str] = {}
    for shard in range(shards):
        filename = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: ckpt.weights[n] for n in names[shard::shards]}
        save_file(part, str(path / filename), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, filename)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return path


def gguf_tensor_name(hf_name: str) -> str:
    if hf_name in _GGUF_GLOBAL_NAMES:
        return _GGUF_GLOBAL_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_GGUF_BLOCK_NAMES[rest]}"


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    vocab_size: int = 384,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    tie_word_embeddings: bool = True,
    attention_bias: bool = False,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 256,
) -> Path:
    """Write the same tiny Llama as a llama.cpp-style F32 GGUF file at ``path``."""
    ckpt = tiny_checkpoint(
        seed=seed,
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        tie_word_embeddings=tie_word_embeddings,
        attention_bias=attention_bias,
        rope_theta=rope_theta,
        max_position_embeddings=max_position_embeddings,
    )
    cfg = ckpt.config
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_dimension_count(cfg["head_dim"])
    _add_gguf_tokenizer(writer, ckpt.tokenizer)
    for name, array in ckpt.weights.items():
        if ".q_proj." in name:
            array = permute_rotary(array, cfg["num_attention_heads"])
        elif ".k_proj." in name:
            array = permute_rotary(array, cfg["num_key_value_heads"])
        writer.add_tensor(gguf_tensor_name(name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_gguf_tokenizer(writer: GGUFWriter, tok: tokenizers.Tokenizer) -> None:
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    tokens = [by_id[i] for i in range(len(by_id))]
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    merges = json.loads(tok.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(BOS_TOKEN_ID)
    writer.add_eos_token_id(EOS_TOKEN_ID)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
