"""The LoRA registry: which adapters stay loaded (LRU with a cap, pinned while in use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipit.core.errors import (
    CapacityError,
    InvalidRequestError,
    ModelLoadError,
    UnknownAdapterError,
)
from shipit.engine.lora import LoraRegistry
from shipit.engine.lora_files import LoraAdapter
from support.tiny_lora import DISTINCT_DIMS as CONFIG
from support.tiny_lora import write_tiny_lora


def _adapter_dir(tmp_path: Path, name: str = "a", **kwargs: Any) -> Path:
    return write_tiny_lora(tmp_path / name, CONFIG, **kwargs)


# --- registry ------------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {
        n: _adapter_dir(tmp_path, n, target_modules=("q_proj",), seed=i)
        for i, n in enumerate("abcd")
    }


def test_registry_rejects_bad_cap() -> None:
    with pytest.raises(InvalidRequestError) as info:
        LoraRegistry(CONFIG, max_loras=0)
    assert info.value.field == "max_loras"


def test_load_is_idempotent_for_same_path(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    first = reg.load("a", dirs["a"])
    assert reg.load("a", str(dirs["a"])) is first
    assert reg.names() == ["a"] and "a" in reg and "b" not in reg and 3 not in reg


def test_same_name_other_path_refused(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    reg.load("a", dirs["a"])
    with pytest.raises(InvalidRequestError) as info:
        reg.load("a", dirs["b"])
    assert info.value.field == "lora_name"
    assert str(dirs["a"].resolve()) in info.value.message
    assert str(dirs["b"].resolve()) in info.value.message


def test_lru_eviction_order(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    reg.load("a", dirs["a"])
    reg.load("b", dirs["b"])
    reg.get("a")  # b is now the least recently used
    reg.load("c", dirs["c"])
    assert sorted(reg.names()) == ["a", "c"] and reg.evictions == 1
    reg.load("d", dirs["d"])  # a was used before c was loaded
    assert reg.names() == ["c", "d"] and reg.evictions == 2


def test_pinned_adapter_is_never_evicted(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    reg.load("a", dirs["a"])
    reg.load("b", dirs["b"])
    reg.acquire("a")
    reg.get("b")  # a is the LRU, but pinned: b goes instead
    reg.load("c", dirs["c"])
    assert sorted(reg.names()) == ["a", "c"]


def test_all_pinned_is_a_capacity_error_saying_how_many(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    for n in "ab":
        reg.load(n, dirs[n])
        reg.acquire(n)
    with pytest.raises(CapacityError) as info:
        reg.load("c", dirs["c"])
    assert "all 2 adapter slots" in info.value.message and "max_loras" in info.value.message
    assert reg.names() == ["a", "b"] and reg.evictions == 0
    reg.release("b")
    reg.load("c", dirs["c"])
    assert sorted(reg.names()) == ["a", "c"]


def test_unload_refused_while_pinned_then_allowed(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=2)
    reg.load("a", dirs["a"])
    reg.acquire("a")
    reg.acquire("a")
    with pytest.raises(InvalidRequestError, match="2 running request") as info:
        reg.unload("a")
    assert info.value.field == "lora_name"
    reg.release("a")
    with pytest.raises(InvalidRequestError):
        reg.unload("a")
    reg.release("a")
    reg.unload("a")
    assert "a" not in reg and reg.evictions == 0


def test_unknown_adapter_lists_loaded_names(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=3)
    with pytest.raises(UnknownAdapterError, match="no LoRA adapters are loaded"):
        reg.get("zzz")
    reg.load("b", dirs["b"])
    reg.load("a", dirs["a"])
    with pytest.raises(UnknownAdapterError) as info:
        reg.acquire("zzz")
    assert info.value.field == "model"
    assert "'zzz'" in info.value.message and "a, b" in info.value.message
    with pytest.raises(UnknownAdapterError) as unload_info:
        reg.unload("zzz")
    assert unload_info.value.field == "lora_name"


def test_release_without_acquire_is_a_caller_error(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=1)
    reg.load("a", dirs["a"])
    with pytest.raises(ValueError, match="not acquired"):
        reg.release("a")


def test_failed_load_evicts_nothing(dirs: dict[str, Path], tmp_path: Path) -> None:
    reg = LoraRegistry(CONFIG, max_loras=1)
    reg.load("a", dirs["a"])
    with pytest.raises(ModelLoadError):
        reg.load("bad", tmp_path / "missing")
    assert reg.names() == ["a"] and reg.evictions == 0


def test_loaded_adapter_is_a_lora_adapter(dirs: dict[str, Path]) -> None:
    reg = LoraRegistry(CONFIG, max_loras=1)
    assert isinstance(reg.load("a", dirs["a"]), LoraAdapter)
    assert json.loads((dirs["a"] / "adapter_config.json").read_text())["r"] == 4


def test_an_unusable_path_is_an_invalid_request(tmp_path: Path) -> None:
    registry = LoraRegistry(CONFIG, max_loras=1)
    with pytest.raises(InvalidRequestError) as info:
        registry.load("x", "/tmp/a\x00b")
    assert info.value.field == "lora_path"
