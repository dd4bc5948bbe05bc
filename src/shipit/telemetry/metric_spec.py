"""What one metric of the catalog is: its kind, the component that exports it, how it is
updated, and ``MetricSpec`` (name, help, unit, labels and their closed values, histogram
buckets), which checks Prometheus naming rules when it is made. ``telemetry.catalog`` holds the
metrics themselves as instances of it. Data only: no collectors, no registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MetricKind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Component(StrEnum):
    GATEWAY = "gateway"
    CONTROL_PLANE = "control_plane"
    REPLICA = "replica"
    PROCESS = "process"
    ACCELERATOR = "accelerator"
    COST = "cost"
    ALERTS = "alerts"
    ROLLOUT = "rollout"
    FRONT_DOOR = "front_door"


class Update(StrEnum):
    """How a value reaches the exposition.

    ``INSTRUMENT``: code records each event on a ``prometheus_client`` object (``inc``,
    ``observe``, ``set``). ``SNAPSHOT``: a custom collector reads a snapshot at scrape time
    (engine totals, process CPU, NVML), so the value is never stored twice.
    """

    INSTRUMENT = "instrument"
    SNAPSHOT = "snapshot"


_SUFFIX_BY_UNIT = {"seconds": "_seconds", "bytes": "_bytes", "usd": "_usd", "ratio": "_ratio"}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric as it appears on ``/metrics``.

    ``name`` is the exposed name, counters included (``..._total``). ``label_values`` documents
    the closed set of values a label may take (``status``: ok, error, ...); labels absent from it
    are open (deployment names, replica ids).
    """

    name: str
    kind: MetricKind
    help: str
    component: Component
    unit: str
    labels: tuple[str, ...] = ()
    buckets_s: tuple[float, ...] = ()
    update: Update = Update.INSTRUMENT
    label_values: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        where = f"metric {self.name!r}"
        if self.kind is MetricKind.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"{where}: a counter's name must end with '_total'")
        if self.kind is not MetricKind.COUNTER and self.name.endswith("_total"):
            raise ValueError(f"{where}: only counters may end with '_total'")
        if self.kind is MetricKind.HISTOGRAM:
            if not self.buckets_s or list(self.buckets_s) != sorted(set(self.buckets_s)):
                raise ValueError(f"{where}: a histogram needs strictly increasing buckets_s")
        elif self.buckets_s:
            raise ValueError(f"{where}: only histograms take buckets_s")
        suffix = _SUFFIX_BY_UNIT.get(self.unit)
        if self.name.startswith("shipit_") and suffix and suffix not in self.name:
            raise ValueError(f"{where}: unit {self.unit!r} needs {suffix!r} in the name")
        for label, _values in self.label_values:
            if label not in self.labels:
                raise ValueError(f"{where}: label_values names unknown label {label!r}")

    def allowed_values(self, label: str) -> tuple[str, ...] | None:
        """The closed set of values of ``label``, or ``None`` when any value is allowed."""
        return dict(self.label_values).get(label)

    def series_names(self) -> tuple[str, ...]:
        """Every series name this metric puts on ``/metrics`` that PromQL may select."""
        if self.kind is MetricKind.HISTOGRAM:
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


_DEP = ("deployment",)


def _spec(
    name: str,
    kind: MetricKind,
    component: Component,
    unit: str,
    help_text: str,
    labels: tuple[str, ...] = _DEP,
    **extra: object,
) -> MetricSpec:
    return MetricSpec(
        name=name,
        kind=kind,
        help=help_text,
        component=component,
        unit=unit,
        labels=labels,
        **extra,  # type: ignore[arg-type]
    )
