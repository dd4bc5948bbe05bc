"""``shipit generate`` as a user runs it: the real default model, greedy, a chat prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.tiny_model import write_tiny_hf_model


def shipit(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SHIPIT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "shipit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_generate_answers_paris_with_the_default_model(tmp_path: Path) -> None:
    done = shipit(
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--chat",
        "--temperature",
        "0",
        "What is the capital of France?",
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "tokens/s" in done.stderr


def test_generate_streams_from_a_local_directory(tmp_path: Path) -> None:
    model = write_tiny_hf_model(tmp_path / "tiny")
    done = shipit(
        "generate",
        "--model",
        str(model),
        "--temperature",
        "0",
        "--max-tokens",
        "5",
        "--no-stats",
        "hello",
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() != ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-1"], "temperature"),
        (["--top-p", "0"], "top_p"),
        (["--max-tokens", "0"], "max_tokens"),
        (["--lora", "nopath"], "NAME=PATH"),
    ],
)
def test_bad_flags_name_the_field(tmp_path: Path, args: list[str], message: str) -> None:
    model = write_tiny_hf_model(tmp_path / "tiny")
    done = shipit("generate", "--model", str(model), *args, "hello", home=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr


def test_unreadable_model_path_is_a_clear_error(tmp_path: Path) -> None:
    done = shipit("generate", "--model", str(tmp_path / "missing"), "hi", home=tmp_path)
    assert done.returncode == 2
    assert "missing" in done.stderr
