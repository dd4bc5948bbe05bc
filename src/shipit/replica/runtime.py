"""Builds the engine a replica serves from its settings: the numpy model on the CPU, or the
real scheduler over a simulated accelerator (``--simulate GPU:MODEL[:tpN]``).

Blocking (reads weights from disk); the app runs it in a worker thread during start-up so
``/health`` can answer 503 meanwhile. The CPU model's weights come memory-mapped from the
prepared-weights cache under ``$SHIPIT_HOME/prepared`` once a first start has written it. It
must not start threads or servers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shipit.config.paths import shipit_home
from shipit.engine.engine import EngineConfig, LLMEngine
from shipit.engine.loader import load_model
from shipit.engine.model import LlamaModel
from shipit.engine.prepared import prepared_weights
from shipit.replica.settings import ReplicaSettings
from shipit.replica.startup import weights_source

log = logging.getLogger("shipit.replica")
_LAYOUT = {"cache": "mapped from the prepared cache", "prepared": "prepared now"}


def engine_config(settings: ReplicaSettings) -> EngineConfig:
    return EngineConfig(
        kv_cache_bytes=settings.kv_cache_bytes,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
        max_waiting=settings.max_waiting,
        max_loras=settings.max_loras,
    )


def build_engine(
    settings: ReplicaSettings, *, on_weights_loaded: Callable[[str], None] | None = None
) -> LLMEngine:
    """``on_weights_loaded(source)`` marks the end of the weights phase of a cold start."""
    config = engine_config(settings)
    source = weights_source(settings.model, settings.simulate)
    if settings.simulate:
        from shipit.engine.simulated import build_simulated_engine  # the planner: only here

        if on_weights_loaded is not None:
            on_weights_loaded(source)  # no weights: the VRAM plan stands in for them
        engine = build_simulated_engine(settings.simulate, config)
    else:
        loaded = load_model(settings.model, progress=log.info)  # conversion, waits: in the log
        weights, prepared = prepared_weights(
            loaded.config,
            lambda: loaded.weights,
            sources=loaded.weight_files,
            cache_dir=shipit_home() / "prepared",
        )
        log.info("weights of %s: %s; engine layout %s", loaded.name, source, _LAYOUT[prepared])
        if on_weights_loaded is not None:
            on_weights_loaded(source)
        model = LlamaModel.from_prepared(loaded.config, weights)
        engine = LLMEngine.from_model(model, loaded.tokenizer, config)
    for lora in settings.loras:
        engine.load_lora(lora.name, lora.path)
    return engine
