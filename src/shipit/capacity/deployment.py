"""One replica's serving configuration: model, GPU, tensor parallelism, precisions, engine knobs.

``Deployment`` mirrors the vLLM flags that decide memory and speed (``--tensor-parallel-size``,
``--quantization``/``--dtype``, ``--kv-cache-dtype``, ``--max-model-len``, ``--max-num-seqs``,
``--max-num-batched-tokens``, ``--gpu-memory-utilization``) and validates them with errors that
name the field and the allowed values. Also owns the one parser of the ``GPU:MODEL[:tpN]``
shorthand (``--simulate``, cost figures). Must not compute memory or performance itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.capacity.dtypes import WeightDtype, kv_dtype_bytes, weight_dtype
from shipit.capacity.records import GpuSpec, ModelSpec
from shipit.core.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Deployment:
    model: ModelSpec
    gpu: GpuSpec
    tp: int = 1
    dtype: str | None = None
    kv_dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9

    def __post_init__(self) -> None:
        check_deployment(self)

    @property
    def weights(self) -> WeightDtype:
        return weight_dtype(self.dtype or self.model.native_dtype)

    @property
    def kv_element_bytes(self) -> float:
        return kv_dtype_bytes(self.kv_dtype)

    @property
    def context_limit(self) -> int:
        """``max_model_len`` or, unset, the model's own maximum context (vLLM's default)."""
        return self.max_model_len or self.model.max_context

    def label(self) -> str:
        return f"{self.model.id} on {self.tp}x {self.gpu.id} ({self.weights.id})"


@dataclass(frozen=True, slots=True)
class GpuModelSpec:
    """``GPU:MODEL[:tpN]`` as written: names not yet looked up in a catalog."""

    gpu: str
    model: str
    tp: int = 1


def parse_gpu_model(text: str, *, flag: str = "--simulate") -> GpuModelSpec:
    """Parse ``GPU:MODEL[:tpN]``, e.g. ``H100:llama-3.1-70b:tp4``; errors name ``flag``."""
    parts = [p.strip() for p in text.split(":")]
    tp = 1
    if len(parts) == 3 and parts[2].lower().startswith("tp") and parts[2][2:].isdigit():
        tp = int(parts[2][2:])
        parts = parts[:2]
    if len(parts) != 2 or not all(parts):
        raise InvalidRequestError(
            f"{flag} expects GPU:MODEL[:tpN] (e.g. H100:llama-3.1-70b:tp4), got {text!r}",
            field=flag.lstrip("-").replace("-", "_"),
        )
    return GpuModelSpec(gpu=parts[0], model=parts[1], tp=tp)


def valid_tp_degrees(model: ModelSpec, gpu: GpuSpec) -> tuple[int, ...]:
    """Tensor-parallel degrees vLLM accepts here: divide the attention heads, within one node."""
    return tuple(t for t in (1, 2, 4, 8, 16) if t <= gpu.max_tp and model.num_heads % t == 0)


def check_deployment(d: Deployment) -> None:
    weight_dtype(d.dtype or d.model.native_dtype)
    kv_dtype_bytes(d.kv_dtype)
    valid = valid_tp_degrees(d.model, d.gpu)
    if d.tp not in valid:
        raise InvalidRequestError(
            f"tp={d.tp} is not possible for {d.model.id} on {d.gpu.id} "
            f"({d.model.num_heads} attention heads, at most {d.gpu.max_tp} GPUs per node); "
            f"use one of {', '.join(map(str, valid))}",
            field="tp",
        )
    if not 0.05 <= d.gpu_memory_utilization <= 1.0:
        raise InvalidRequestError(
            f"gpu_memory_utilization={d.gpu_memory_utilization} is outside (0.05, 1.0]; "
            "vLLM's default is 0.9",
            field="gpu_memory_utilization",
        )
    if d.max_num_seqs < 1 or d.max_num_batched_tokens < 1:
        raise InvalidRequestError(
            "max_num_seqs and max_num_batched_tokens must be at least 1",
            field="max_num_seqs" if d.max_num_seqs < 1 else "max_num_batched_tokens",
        )
    if d.max_model_len is not None and d.max_model_len < 1:
        raise InvalidRequestError(
            f"max_model_len={d.max_model_len} must be at least 1", field="max_model_len"
        )
