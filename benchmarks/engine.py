"""Embedded engine benchmark on the default model (SmolLM2-135M-Instruct, float32, CPU).

Prints and writes JSON (``benchmarks/results/engine.json``):
- model load time, cold (GGUF -> safetensors conversion into a fresh cache) and warm;
- decode tokens/s at 1, 8, 16 and 32 concurrent sequences (steps where every scheduled
  sequence is decoding; prefill excluded), and the aggregate-at-16 / single ratio;
- TTFT of a 1,000-token prompt, cold and prefix-cached.

Run: ``uv run python benchmarks/engine.py [--concurrency 1 8 16 32] [--decode-tokens 48]``.
Goals: aggregate at 16 >= 5x single-stream; cached TTFT >= 5x faster than cold.
Yardstick: llama.cpp does 56-60 tokens/s single-stream on 2 threads on these machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import DEFAULT_MODEL, LoadedModel, load_model
from shipit.engine.sampling import SamplingParams

RESULTS = Path(__file__).parent / "results" / "engine.json"


def load_times() -> tuple[LoadedModel, float, float]:
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        load_model(DEFAULT_MODEL, home=Path(home))
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = load_model(DEFAULT_MODEL, home=Path(home))
        warm_s = time.perf_counter() - t0
    return model, cold_s, warm_s


def decode_rate(model: LoadedModel, concurrency: int, decode_tokens: int) -> float:
    engine = LLMEngine.from_loaded(model, EngineConfig(max_num_seqs=max(concurrency, 1)))
    rng = np.random.default_rng(concurrency)
    params = SamplingParams(temperature=0.0, max_tokens=decode_tokens, ignore_eos=True)
    for i in range(concurrency):
        engine.add_request(f"d{i}", rng.integers(100, 40000, size=32).tolist(), params)
    tokens, seconds = 0, 0.0
    while engine.has_unfinished_requests():
        prefilling = any(s.num_computed_tokens < s.num_tokens - 1 for s in engine.scheduler.running)
        waiting = bool(engine.scheduler.waiting)
        t0 = time.perf_counter()
        outs = engine.step()
        dt = time.perf_counter() - t0
        if not prefilling and not waiting:
            tokens += len(outs)
            seconds += dt
    return tokens / seconds


def ttft(engine: LLMEngine, prompt: list[int], rid: str) -> float:
    engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=1))
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--decode-tokens", type=int, default=48)
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    args = parser.parse_args()

    model, cold_s, warm_s = load_times()
    print(f"model load: cold (conversion) {cold_s:.2f} s, warm (cache) {warm_s:.2f} s")
    rates = {}
    for c in args.concurrency:
        rates[c] = decode_rate(model, c, args.decode_tokens)
        print(
            f"decode @ {c:>2} concurrent: {rates[c]:7.1f} tokens/s aggregate, "
            f"{rates[c] / c:6.1f} per sequence"
        )
    engine = LLMEngine.from_loaded(model, EngineConfig(max_num_batched_tokens=512))
    prompt = np.random.default_rng(0).integers(100, 40000, size=args.prompt_tokens).tolist()
    cold_ttft = ttft(engine, prompt, "cold")
    cached_ttft = ttft(engine, prompt, "cached")
    print(
        f"TTFT {args.prompt_tokens}-token prompt: cold {1000 * cold_ttft:.0f} ms, "
        f"prefix-cached {1000 * cached_ttft:.0f} ms ({cold_ttft / cached_ttft:.1f}x)"
    )
    ratio = rates[16] / rates[1] if 16 in rates and 1 in rates else None
    if ratio is not None:
        print(f"aggregate @16 / single-stream: {ratio:.1f}x (goal >= 5x)")
    result = {
        "model": DEFAULT_MODEL,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "load_cold_s": cold_s,
        "load_warm_s": warm_s,
        "decode_tokens_per_s": {str(c): r for c, r in rates.items()},
        "aggregate_16_over_1": ratio,
        "ttft_1000_cold_ms": 1000 * cold_ttft,
        "ttft_1000_cached_ms": 1000 * cached_ttft,
        "ttft_speedup_cached": cold_ttft / cached_ttft,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
