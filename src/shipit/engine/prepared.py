"""The engine's weights as the forward pass reads them, prepared once and memory-mapped after.

Turning Hugging Face weights into the engine's layout (``model.prepare_weights``: projections
transposed, q/k/v and gate/up fused) copies every tensor: seconds of CPU for even a small model
at every start. This module caches that layout as one safetensors file under a cache directory
(the replica uses ``$SHIPIT_HOME/prepared``) and maps it read-only on later starts, so a warm
start reads nothing until the first forward pass touches the pages (shared through the page
cache by every replica on the machine).

A cached file is keyed by the source weight files (resolved path, size, modification time)
and ``LAYOUT_VERSION``; one source keeps one file (a newer key replaces the older), a file
that does not match the model's shapes is ignored and rewritten, and each directory names its
sources (``sources.txt``) so that writing a new file also deletes the files of models whose
sources are gone (temporary checkpoints). Files are written beside their
final name and renamed into place, so a reader never maps a half-written file and a file in use
is never rewritten. If the cache cannot be written (read-only disk), the prepared weights are
used from memory and the start goes on. It does not read or convert source checkpoints (the
loader does) and runs no model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shipit.core.errors import ModelLoadError
from shipit.engine.model import F32, prepare_weights, prepared_shapes
from shipit.engine.model_config import ModelConfig
from shipit.engine.safetensors_io import read_safetensors

log = logging.getLogger("shipit.engine")

# Bump when ``prepare_weights`` changes what it writes: older files are then never read.
LAYOUT_VERSION = 1
SUFFIX = ".safetensors"
SOURCES = "sources.txt"


def cache_file(cache_dir: Path, sources: Sequence[Path]) -> Path:
    """Where the prepared weights of ``sources`` live: one directory per source model, one
    file per version of it (its files' sizes and modification times)."""
    resolved = [p.resolve() for p in sources]
    where = hashlib.sha256("\n".join(map(str, resolved)).encode()).hexdigest()[:16]
    stamp = hashlib.sha256(f"layout {LAYOUT_VERSION}".encode())
    for path in resolved:
        st = path.stat()
        stamp.update(f"\n{path}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return cache_dir / where / (stamp.hexdigest()[:16] + SUFFIX)


def load_cached(path: Path, config: ModelConfig) -> dict[str, F32] | None:
    """The prepared weights at ``path``, memory-mapped; ``None`` if absent or not this model's."""
    if not path.is_file():
        return None
    try:
        arrays = read_safetensors(path, mmap=True)
    except ModelLoadError as exc:
        log.warning("ignoring the prepared weights at %s: %s", path, exc)
        return None
    expected = prepared_shapes(config)
    if set(arrays) != set(expected) or any(
        arrays[k].shape != shape or arrays[k].dtype != np.float32 for k, shape in expected.items()
    ):
        log.warning("ignoring the prepared weights at %s: they do not match the model", path)
        return None
    return arrays


def save(path: Path, prepared: Mapping[str, F32]) -> None:
    """Write ``prepared`` at ``path`` (renamed into place) and drop older versions beside it."""
    from safetensors.numpy import save_file  # only the first start of a model writes

    path.parent.mkdir(parents=True, exist_ok=True)
    _prune(path.parent.parent)
    fd, name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        save_file(dict(prepared), str(tmp), metadata={"format": "shipit-prepared"})
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    for older in path.parent.glob("*" + SUFFIX):
        if older != path:
            with contextlib.suppress(OSError):
                older.unlink()  # a replica still mapping it keeps its pages until it exits


def _prune(cache_dir: Path) -> None:
    """Delete the cached files of models none of whose source files exist any more."""
    for entry in cache_dir.iterdir():
        listing = entry / SOURCES
        try:
            sources = listing.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue  # not ours, or being written
        if sources and not any(Path(s).exists() for s in sources):
            shutil.rmtree(entry, ignore_errors=True)


def prepared_weights(
    config: ModelConfig,
    hf_weights: Callable[[], Mapping[str, Any]],
    *,
    sources: Sequence[Path],
    cache_dir: Path | None,
) -> tuple[dict[str, F32], str]:
    """The prepared weights and where they came from: ``"cache"`` (mapped from a file written
    by an earlier start) or ``"prepared"`` (from ``hf_weights()`` now, and cached if possible).

    Without ``sources`` (weights that exist only in memory) or ``cache_dir`` nothing is cached.
    """
    path = cache_file(cache_dir, sources) if cache_dir is not None and sources else None
    if path is not None:
        cached = load_cached(path, config)
        if cached is not None:
            return cached, "cache"
    prepared = prepare_weights(config, hf_weights())
    if path is not None:
        try:
            save(path, prepared)
            (path.parent / SOURCES).write_text(
                "".join(f"{p.resolve()}\n" for p in sources), encoding="utf-8"
            )
        except OSError as exc:
            log.warning("cannot cache the prepared weights at %s (%s); continuing", path, exc)
    return prepared, "prepared"
