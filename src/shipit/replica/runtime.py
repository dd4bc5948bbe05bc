"""Builds the engine a replica serves from its settings: the numpy model on the CPU, or the
real scheduler over a simulated accelerator (``--simulate GPU:MODEL[:tpN]``).

Blocking (reads weights from disk); the app runs it in a worker thread during start-up so
``/health`` can answer 503 meanwhile. It must not start threads or servers.
"""

from __future__ import annotations

from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import load_model
from shipit.engine.simulated import build_simulated_engine
from shipit.replica.settings import ReplicaSettings


def engine_config(settings: ReplicaSettings) -> EngineConfig:
    return EngineConfig(
        kv_cache_bytes=settings.kv_cache_bytes,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
        max_waiting=settings.max_waiting,
        max_loras=settings.max_loras,
    )


def build_engine(settings: ReplicaSettings) -> LLMEngine:
    config = engine_config(settings)
    if settings.simulate:
        engine = build_simulated_engine(settings.simulate, config)
    else:
        engine = LLMEngine.from_loaded(load_model(settings.model), config)
    for lora in settings.loras:
        engine.load_lora(lora.name, lora.path)
    return engine
