"""Weight and KV-cache precisions: bytes per element, which layers they cover, compute path.

Owns the table of formats the planner understands (``bf16``, ``fp8``, ``int8``, ``int4-awq``,
``gguf-q4_k_m``, ``mxfp4``, ``nvfp4``) and how each maps to tensor-core throughput. Pure data;
must not know about models or GPUs beyond the compute-precision name.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.core.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class WeightDtype:
    """A weight format.

    ``bytes_per_param`` includes scales and zero points (AWQ: 4 bits + fp16 scale and 4-bit zero
    per group of 128 = 4.16 bits). ``scope`` says which weights it covers: ``linear`` (every
    projection; embeddings and LM head stay 16-bit, as vLLM does), ``all`` (GGUF quantises the
    embeddings too) or ``experts`` (MXFP4 in gpt-oss covers the MoE experts only).
    ``compute`` is the tensor-core precision the matmuls run in (W4A16 formats run in bf16).
    """

    id: str
    bytes_per_param: float
    scope: str
    compute: str
    note: str


WEIGHT_DTYPES: dict[str, WeightDtype] = {
    d.id: d
    for d in (
        WeightDtype("bf16", 2.0, "linear", "bf16", "16-bit, the reference"),
        WeightDtype("fp16", 2.0, "linear", "bf16", "16-bit"),
        WeightDtype("fp8", 1.0, "linear", "fp8", "W8A8 FP8 (weight-only W8A16 where no FP8 cores)"),
        WeightDtype("int8", 1.0, "linear", "int8", "W8A8 INT8 (SmoothQuant-style)"),
        WeightDtype("int4-awq", 4.16 / 8, "linear", "bf16", "W4A16 AWQ, group size 128"),
        WeightDtype("gguf-q4_k_m", 4.85 / 8, "all", "bf16", "llama.cpp Q4_K_M, ~4.85 bits/weight"),
        WeightDtype("mxfp4", 4.25 / 8, "experts", "fp4", "OCP MXFP4 (gpt-oss experts)"),
        WeightDtype("nvfp4", 4.5 / 8, "linear", "fp4", "NVFP4, FP8 scale per 16 values"),
    )
}

KV_DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp32": 4.0}

_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "fp8_e4m3": "fp8",
    "fp8_e5m2": "fp8",
    "awq": "int4-awq",
    "int4": "int4-awq",
    "q4_k_m": "gguf-q4_k_m",
    "fp4": "nvfp4",
    "auto": "auto",
}


def weight_dtype(name: str) -> WeightDtype:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in WEIGHT_DTYPES:
        raise InvalidRequestError(
            f"unknown weight dtype {name!r}; use one of {', '.join(WEIGHT_DTYPES)}", field="dtype"
        )
    return WEIGHT_DTYPES[key]


def kv_dtype_bytes(name: str) -> float:
    """Bytes per KV element; ``auto`` follows vLLM: the activation dtype (16-bit), not weights."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key == "auto":
        return 2.0
    if key not in KV_DTYPE_BYTES:
        raise InvalidRequestError(
            f"unknown KV-cache dtype {name!r}; use auto or one of {', '.join(KV_DTYPE_BYTES)}",
            field="kv_dtype",
        )
    return KV_DTYPE_BYTES[key]
