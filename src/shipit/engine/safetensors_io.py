"""Reading a safetensors file into numpy arrays: the engine's one safetensors reader.

Owns the file layout (an 8-byte little-endian header size, a JSON header, then raw
little-endian tensor data), checking every header entry against the file (dtype, shape and
offsets agree, nothing runs past the end), and the dtypes numpy can hold; bfloat16, which
numpy lacks, is widened to float32 (it is the top half of a float32). Both the model loader
and the LoRA adapter reader call ``read_safetensors``; they say which dtypes they accept and
prefix errors with what the file is. A model's weights are memory-mapped read-only
(``mmap=True``: nothing is read until a tensor is used, and a warm page cache is shared by every
replica on the machine); small files are read into one buffer. It must not choose tensors,
cast them to the model's dtype or load pickle checkpoints.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipit.core.errors import ModelLoadError

# Safetensors dtype names numpy represents as they are stored (little-endian).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
BF16 = "BF16"
ALL_DTYPES = frozenset({*NUMPY_DTYPES, BF16})
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", BF16})
_ITEMSIZE = {**{k: v.itemsize for k, v in NUMPY_DTYPES.items()}, BF16: 2}


def read_safetensors(
    path: Path,
    *,
    dtypes: frozenset[str] = ALL_DTYPES,
    context: str = "",
    field: str | None = None,
    mmap: bool = False,
) -> dict[str, np.ndarray]:
    """Every tensor in ``path`` by name, as stored (BF16 becomes float32).

    ``dtypes`` are the safetensors dtype names the caller accepts; ``context`` (e.g.
    ``"LoRA adapter 'x': "``) starts every error message, and ``field`` (default: the path)
    is the error's field. Arrays are views of one buffer read from the file, or with ``mmap``
    read-only views of the file mapped into memory (the file must then not be rewritten in
    place while they are in use: replace it by renaming a new file over it).
    """
    where = field if field is not None else str(path)

    def corrupt(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{context}{path} is not a valid safetensors file ({why}); the file is corrupt "
            "or incomplete",
            field=where,
        )

    try:
        data = _map(path) if mmap else _read_all(path)
    except OSError as exc:
        raise ModelLoadError(
            f"{context}cannot read {path}: {exc.strerror or exc}", field=where
        ) from exc
    if len(data) < 8:
        raise corrupt("shorter than its 8-byte header size")
    (header_len,) = struct.unpack("<Q", data[:8].tobytes())
    if header_len > len(data) - 8:
        raise corrupt(f"header of {header_len} bytes runs past the end of the file")
    try:
        header = json.loads(data[8 : 8 + header_len].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    body = data[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype, shape, start, end = _entry(key, info, corrupt)
        if dtype not in dtypes or dtype not in _ITEMSIZE:
            raise ModelLoadError(
                f"{context}tensor {key!r} in {path} has dtype {dtype}; shipit loads "
                f"{', '.join(sorted(dtypes))} here",
                field=where,
            )
        size = math.prod(shape) * _ITEMSIZE[dtype]
        if not 0 <= start <= end <= len(body) or end - start != size:
            raise corrupt(f"data offsets of {key!r} do not match its shape {list(shape)}")
        tensors[key] = _decode(body[start:end], dtype).reshape(shape)
    return tensors


def _read_all(path: Path) -> np.ndarray:
    """The file's bytes in one writable buffer (``readinto``: no second copy)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = np.empty(size, dtype=np.uint8)
        view = data.data  # a memoryview of the array
        filled = 0
        while filled < size:
            n = handle.readinto(view[filled:])
            if not n:
                break
            filled += n
    return data[:filled]


def _map(path: Path) -> np.ndarray:
    """The file's bytes, memory-mapped read-only (an empty file has nothing to map)."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return np.empty(0, dtype=np.uint8)
        # The mapping outlives the file handle; it is unmapped when no array uses it.
        return np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)


def _entry(
    key: str, info: Any, corrupt: Callable[[str], ModelLoadError]
) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype, shape, start, end) of one header entry, or a 'malformed' error."""
    try:
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        dims = tuple(int(d) for d in shape)
        if not isinstance(dtype, str) or not (isinstance(start, int) and isinstance(end, int)):
            raise TypeError("dtype must be a string and data_offsets integers")
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt(f"entry for {key!r} is malformed") from exc
    return dtype, dims, start, end


def _decode(chunk: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == BF16:
        # bfloat16 is the top half of a float32.
        return (chunk.view("<u2").astype(np.uint32) << 16).view(np.float32)
    return chunk.view(NUMPY_DTYPES[dtype])
