"""A Hugging Face ``config.json`` mapping as a ``ModelSpec``: shipit's one config parser.

Owns which keys mean what (``num_hidden_layers``, ``num_key_value_heads``, MoE and MLA keys
under their several spellings, ``text_config`` of multimodal models, special token ids, RoPE
settings) and the defaults when a key is absent. The capacity planner reads a local
``config.json`` with it; the engine builds its run-time view from the same record
(``engine.model_config``), so the planner and the engine never disagree on a model's shape.
Pure: it takes an already-read mapping; reading the file is the caller's job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from shipit.capacity.records import MlaSpec, ModelSpec, MoeSpec, normalize_id
from shipit.core.errors import ModelLoadError

# Qwen2 checkpoints carry q/k/v biases without saying so in config.json.
_BIASED_BY_DEFAULT = frozenset({"Qwen2ForCausalLM"})


def model_from_hf_config(
    raw: Mapping[str, Any],
    *,
    source: str = "config.json",
    architectures: Collection[str] = (),
) -> ModelSpec:
    """A ``ModelSpec`` from a Hugging Face config mapping; errors name the missing key.

    ``architectures``, when given (the engine passes the ones it runs), refuses any other
    architecture before a key is read, so an unsupported model is named as such rather than
    by the first key its config spells differently.
    """
    text = raw.get("text_config")
    cfg: Mapping[str, Any] = {**raw, **text} if isinstance(text, dict) else raw
    archs = cfg.get("architectures") or ()
    arch = str(archs[0]) if archs else None
    if architectures and arch is not None and arch not in architectures:
        raise ModelLoadError(
            f"{source}: architecture {arch!r} is not supported; "
            f"shipit's engine runs {', '.join(architectures)}",
            field="architectures",
        )
    try:
        return _spec(cfg, arch, source)
    except KeyError as exc:
        raise ModelLoadError(
            f"{source}: required key {exc.args[0]!r} is missing", field=str(exc.args[0])
        ) from exc


def _spec(cfg: Mapping[str, Any], arch: str | None, source: str) -> ModelSpec:
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    name = str(cfg.get("_name_or_path") or _parent_dir_name(source) or "local-model")
    bos = cfg.get("bos_token_id")
    return ModelSpec(
        id=normalize_id(name.split("/")[-1]) or "local-model",
        name=name,
        aliases=(),
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        max_context=int(cfg.get("max_position_embeddings") or 2048),
        native_dtype="bf16",
        source=source,
        as_of="local file",
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(cfg.get("attention_bias", arch in _BIASED_BY_DEFAULT)),
        moe=_moe(cfg),
        mla=_mla(cfg),
        architecture=arch,
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling(cfg.get("rope_scaling")),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        bos_token_id=int(bos) if bos is not None else None,
        eos_token_ids=_token_ids(cfg.get("eos_token_id")),
    )


def _parent_dir_name(source: str) -> str:
    """The directory a config file sits in (``/models/x/config.json`` -> ``x``); no IO."""
    parts = [p for p in source.replace("\\", "/").split("/") if p not in ("", ".")]
    return parts[-2] if len(parts) >= 2 else ""


def _token_ids(value: Any) -> tuple[int, ...]:
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    return (int(value),) if value is not None else ()


def _rope_scaling(value: Any) -> str | None:
    """The RoPE scaling type (``llama3``, ``yarn``, ...); None when RoPE is unscaled."""
    if value is None:
        return None
    kind = (value.get("rope_type") or value.get("type")) if isinstance(value, dict) else value
    if kind == "default":
        return None
    return str(kind) if kind else repr(value)


def _moe(raw: Mapping[str, Any]) -> MoeSpec | None:
    experts = raw.get("num_local_experts") or raw.get("num_experts") or raw.get("n_routed_experts")
    if not experts:
        return None
    inter = raw.get("moe_intermediate_size") or raw["intermediate_size"]
    return MoeSpec(
        num_experts=int(experts),
        experts_per_token=int(raw.get("num_experts_per_tok") or raw.get("experts_per_token") or 2),
        moe_intermediate_size=int(inter),
        num_shared_experts=int(raw.get("n_shared_experts") or 0),
        first_dense_layers=int(raw.get("first_k_dense_replace") or 0),
    )


def _mla(raw: Mapping[str, Any]) -> MlaSpec | None:
    if not raw.get("kv_lora_rank"):
        return None
    return MlaSpec(
        q_lora_rank=int(raw.get("q_lora_rank") or 0),
        kv_lora_rank=int(raw["kv_lora_rank"]),
        qk_nope_head_dim=int(raw["qk_nope_head_dim"]),
        qk_rope_head_dim=int(raw["qk_rope_head_dim"]),
        v_head_dim=int(raw["v_head_dim"]),
    )
