"""The one safetensors reader: layout checks, dtypes, bfloat16 widening, error wording."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from shipit.core.errors import ModelLoadError
from shipit.engine.safetensors_io import FLOAT_DTYPES, read_safetensors


def _write_raw(path: Path, header: dict[str, Any], body: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)
    return path


def test_reads_what_the_safetensors_library_wrote(tmp_path: Path) -> None:
    tensors = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.array([0.5, -2.0], dtype=np.float16),
        "i64": np.array([[7]], dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    got = read_safetensors(tmp_path / "t.safetensors")
    assert sorted(got) == sorted(tensors)  # __metadata__ is not a tensor
    for name, array in tensors.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)


def test_bfloat16_is_widened_to_float32(tmp_path: Path) -> None:
    values = np.array([1.0, -0.5, 3.140625], dtype=np.float32)  # exact in bfloat16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = _write_raw(
        tmp_path / "b.safetensors",
        {"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}},
        raw,
    )
    got = read_safetensors(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_a_dtype_the_caller_does_not_accept_is_named(tmp_path: Path) -> None:
    save_file({"ids": np.array([1, 2], dtype=np.int32)}, str(tmp_path / "i.safetensors"))
    with pytest.raises(ModelLoadError, match=r"tensor 'ids' .* has dtype I32") as info:
        read_safetensors(tmp_path / "i.safetensors", dtypes=FLOAT_DTYPES, field="lora_path")
    assert info.value.field == "lora_path"


def test_an_unknown_dtype_is_refused(tmp_path: Path) -> None:
    path = _write_raw(
        tmp_path / "f8.safetensors",
        {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
        b"\0\0",
    )
    with pytest.raises(ModelLoadError, match="has dtype F8_E4M3"):
        read_safetensors(path)


@pytest.mark.parametrize(
    ("header", "body", "needle"),
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8, "offsets"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "offsets"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}, b"\0" * 4, "malformed"),
        ({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "malformed"),
    ],
)
def test_inconsistent_entries_are_load_errors(
    tmp_path: Path, header: dict[str, Any], body: bytes, needle: str
) -> None:
    path = _write_raw(tmp_path / "x.safetensors", header, body)
    with pytest.raises(ModelLoadError, match=needle):
        read_safetensors(path, context="LoRA adapter 'a': ")


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"\1\0", "shorter than its 8-byte header size"),
        (struct.pack("<Q", 1000) + b"{}", "runs past the end"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_a_corrupt_file_is_named_with_the_callers_context(
    tmp_path: Path, blob: bytes, needle: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ModelLoadError, match=needle) as info:
        read_safetensors(path, context="LoRA adapter 'a': ")
    assert info.value.message.startswith(f"LoRA adapter 'a': {path} is not a valid safetensors")
    assert info.value.field == str(path)


def test_an_unreadable_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_safetensors(tmp_path / "missing.safetensors")
