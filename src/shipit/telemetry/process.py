"""Scrape-time collectors for this process (CPU, resident memory) and its GPUs (NVML).

Owns reading the operating system and NVML at scrape time and yielding the catalog's
``shipit_process_*`` and ``shipit_accelerator_*`` families. NVML comes from ``nvidia-ml-py``
(module ``pynvml``), which shipit does not depend on: ``nvml_collector()`` returns ``None``
unless that module imports *and* reports at least one GPU, so CPU-only hosts export process
metrics only. Nothing here runs at import time and no global registry is touched.
"""

from __future__ import annotations

import importlib
import os
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import snapshot_family


def read_cpu_s() -> float:
    """User plus system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_rss_bytes() -> float | None:
    """Current resident set size from ``/proc/self/statm``; ``None`` where there is no procfs."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return float(int(fields[1]) * os.sysconf("SC_PAGE_SIZE"))


class ProcessCollector(Collector):
    """``shipit_process_cpu_seconds_total`` and ``..._resident_memory_bytes``, per component.

    The readers are injectable so tests can pin values; the defaults read this process.
    """

    def __init__(
        self,
        component: str,
        *,
        cpu_s: Callable[[], float] = read_cpu_s,
        rss_bytes: Callable[[], float | None] = read_rss_bytes,
    ) -> None:
        self.component = component
        self._cpu_s = cpu_s
        self._rss_bytes = rss_bytes

    def collect(self) -> Iterator[Metric]:
        yield snapshot_family(cat.PROCESS_CPU, [((self.component,), self._cpu_s())])
        rss = self._rss_bytes()
        if rss is not None:
            yield snapshot_family(cat.PROCESS_RSS, [((self.component,), rss)])


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    name: str
    utilization_ratio: float
    memory_used_bytes: float
    memory_total_bytes: float


def gpu_samples_from(nvml: Any) -> list[GpuSample]:
    """Read every GPU through an initialised ``pynvml``-shaped module (or a fake of it)."""
    samples = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        samples.append(
            GpuSample(
                index=index,
                # Older nvidia-ml-py releases return bytes, newer ones str.
                name=name.decode() if isinstance(name, bytes) else str(name),
                utilization_ratio=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100.0,
                memory_used_bytes=float(memory.used),
                memory_total_bytes=float(memory.total),
            )
        )
    return samples


class NvmlCollector(Collector):
    """``shipit_accelerator_*`` for every GPU NVML sees, read at each scrape."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    def collect(self) -> Iterator[Metric]:
        samples = gpu_samples_from(self._nvml)
        for spec, attr in (
            (cat.ACCEL_UTIL, "utilization_ratio"),
            (cat.ACCEL_MEM_USED, "memory_used_bytes"),
            (cat.ACCEL_MEM_TOTAL, "memory_total_bytes"),
        ):
            yield snapshot_family(
                spec, [((str(s.index), s.name), float(getattr(s, attr))) for s in samples]
            )


def nvml_collector(module: str = "pynvml") -> NvmlCollector | None:
    """An ``NvmlCollector`` when ``nvidia-ml-py`` imports and sees a GPU, else ``None``.

    NVML stays initialised for the life of the process (``nvmlInit`` is reference-counted and
    cheap to leave open); a host whose driver is missing or broken gets ``None``, not an error.
    """
    try:
        nvml = importlib.import_module(module)
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
        if int(nvml.nvmlDeviceGetCount()) < 1:
            nvml.nvmlShutdown()
            return None
    except Exception:  # pynvml raises NVMLError subclasses for "no driver", "no device", ...
        return None
    return NvmlCollector(nvml)
