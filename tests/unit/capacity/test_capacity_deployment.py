"""The one ``GPU:MODEL[:tpN]`` parser."""

from __future__ import annotations

import pytest

from shipit.capacity import GpuModelSpec, parse_gpu_model
from shipit.core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("H100:llama-3.1-70b:tp4", GpuModelSpec("H100", "llama-3.1-70b", 4)),
        (" l4 : llama-3.1-8b ", GpuModelSpec("l4", "llama-3.1-8b", 1)),
        ("h200:qwen2.5-72b:TP2", GpuModelSpec("h200", "qwen2.5-72b", 2)),
    ],
)
def test_parses_gpu_model_and_tp(text: str, parsed: GpuModelSpec) -> None:
    assert parse_gpu_model(text) == parsed


@pytest.mark.parametrize("text", ["H100", "H100:", ":llama", "H100:m:x4", "a:b:tp2:c", ""])
def test_malformed_specs_name_the_flag_and_the_form(text: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"--simulate expects GPU:MODEL\[:tpN\]") as info:
        parse_gpu_model(text)
    assert info.value.field == "simulate"
    with pytest.raises(InvalidRequestError, match="--hardware expects") as info:
        parse_gpu_model(text, flag="--hardware")
    assert info.value.field == "hardware"
