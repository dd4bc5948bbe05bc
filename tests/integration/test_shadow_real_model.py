"""Shadow traffic with the real packaged model (SmolLM2-135M-Instruct): a candidate that is the
same model with a LoRA adapter merged into its weights answers temperature-0 requests
differently, and the diff report says so; a candidate identical to the baseline answers every
one of them identically. Users are served by the baseline throughout."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipit.engine.loader import DEFAULT_MODEL, load_model
from shipit.engine.lora_files import load_lora_adapter
from support.tiny_lora import merge_lora, write_safetensors, write_tiny_lora
from support.up_process import Up, launch

pytestmark = pytest.mark.slow


def merged_model(root: Path) -> Path:
    """The default model's directory with a random LoRA merged into its attention weights."""
    base = load_model(DEFAULT_MODEL)
    source = Path(base.source)
    source = source if source.is_dir() else source.parent
    out = root / "merged"
    out.mkdir()
    for f in source.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    lora = write_tiny_lora(
        root / "lora", base.config, target_modules=("q_proj", "v_proj"), scale=0.05, seed=5
    )
    adapter = load_lora_adapter("x", lora, base.config)
    write_safetensors(out / "model.safetensors", merge_lora(base.weights, adapter))
    return out


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Up, Path]]:
    merged = merged_model(tmp_path)
    cfg = {
        "deployments": [
            {
                "name": "chat",
                "model": DEFAULT_MODEL,
                "replicas": 1,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
                "rollout": {"shadow_percent": 100, "warmup_timeout_s": 240},
            }
        ],
    }
    args = ("--state-dir", str(tmp_path / "state"))
    proc, port, log = launch(tmp_path, cfg, ready_replicas=1, args=args)
    handle = Up(proc, port, log, 1)
    try:
        yield handle, merged
    finally:
        handle.stop()


def shadow_run(up: Up, version: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(up.url + "/shipit/rollouts", json={**version, "strategy": "shadow"}, timeout=30)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 240
    while httpx.get(up.url + "/shipit/rollouts", timeout=10).json()["rollouts"][0]["phase"] != (
        "shadow"
    ):
        assert time.monotonic() < deadline, up.log.read_text()[-3000:]
        time.sleep(0.5)
    questions = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
                 "Say hello in Spanish.", "What do bees make?", "Name a large ocean."]  # fmt: skip
    with httpx.Client(timeout=120) as client:
        for q in questions:
            body = {
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": q}],
                "max_tokens": 16,
                "temperature": 0,
                "stream": True,
            }
            with client.stream("POST", up.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                assert b"".join(resp.iter_bytes()).rstrip().endswith(b"data: [DONE]")
    deadline = time.monotonic() + 60
    while True:
        state: dict[str, Any] = httpx.get(up.url + "/shipit/rollouts", timeout=10).json()[
            "rollouts"
        ][0]
        if state["shadow"]["compared"] >= len(questions) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    r = httpx.post(up.url + "/shipit/rollouts/chat/abort", timeout=30)
    assert r.status_code == 202, r.text
    while httpx.get(up.url + "/shipit/rollouts", timeout=10).json()["rollouts"][0]["phase"] != (
        "rolled_back"
    ):
        time.sleep(0.3)
    shadow: dict[str, Any] = state["shadow"]
    return shadow


def test_shadow_of_a_lora_candidate_shows_differences_and_of_an_equal_one_none(
    up: tuple[Up, Path],
) -> None:
    handle, merged = up
    lora = shadow_run(handle, {"version": "v2-lora", "model": str(merged)})
    assert lora["compared"] == 6
    assert lora["exact_match_rate"] < 1.0 and lora["mean_edit_distance"] > 0
    same = shadow_run(handle, {"version": "v3-same"})
    assert same["compared"] == 6
    assert same["exact_match_rate"] == 1.0 and same["mean_edit_distance"] == 0.0
    print("lora:", lora["reason"])
    print("same:", same["reason"])


def test_blue_green_with_the_real_model_under_load_drops_nothing(
    up: tuple[Up, Path],
) -> None:
    from support.open_loop import OpenLoop

    handle, _ = up
    load = OpenLoop(handle.url, DEFAULT_MODEL, rate_per_s=0.5, max_tokens=6, timeout_s=300)
    load.start()
    try:
        time.sleep(2)
        start = {"version": "v2", "strategy": "blue_green", "keep_old_s": 3}
        r = httpx.post(handle.url + "/shipit/rollouts", json=start, timeout=30)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 240
        phase = ""
        while phase not in ("complete", "rolled_back"):
            assert time.monotonic() < deadline, handle.log.read_text()[-3000:]
            time.sleep(0.5)
            phase = httpx.get(handle.url + "/shipit/rollouts", timeout=10).json()["rollouts"][0][
                "phase"
            ]
        # Keep the load on past the switch until enough requests were answered: a fast
        # machine completes the rollout in fewer of the load's ticks.
        settle = time.monotonic() + 60
        while len(load.results) < 10 and time.monotonic() < settle:
            time.sleep(0.5)
        time.sleep(2)
    finally:
        load.stop()
    assert phase == "complete"
    assert len(load.results) >= 10
    assert load.failed() == [], load.failed()[:3]
    replicas = handle.status()["deployments"][0]["replicas"]
    assert {r["version"] for r in replicas} == {"v2"}
