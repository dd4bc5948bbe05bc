"""The ``rollout:`` block of a deployment in ``shipit.yaml``, and the spec of one rollout.

A deployment's replicas run one *version* (``version``, default ``v1``: what the deployment's
``model``, ``simulate`` and ``replica_args`` start). A rollout brings up another version
(``VersionConfig``: its own model, simulated accelerator, replica flags such as a LoRA adapter
or engine arguments, and replica count) beside it, moves traffic to it (``strategy``:
``blue_green`` at once, ``canary`` in ``steps_percent`` with ``bake_s`` per step), judges it
(``analysis``) and either promotes it or rolls back. ``RolloutSpec`` is one rollout, as
``shipit rollout start`` asks for it and as the rollout policy reads it (its ``config``).

Example::

    deployments:
      - name: chat
        model: smollm2-135m-instruct
        replicas: 2
        rollout:
          version: v1
          strategy: canary
          steps_percent: [1, 5, 25, 50]
          bake_s: 60
          versions:
            - {name: v2, replica_args: [--max-num-seqs, "16"], replicas: 2}

Pydantic, ``extra="forbid"``, units in names; no IO here.
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Metric = Literal["ttft", "tpot", "errors", "goodput"]
Strategy = Literal["canary", "blue_green", "shadow"]
ALL_METRICS: tuple[Metric, ...] = ("ttft", "tpot", "errors", "goodput")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_steps(steps: list[float]) -> list[float]:
    if not steps:
        raise ValueError("steps_percent needs at least one step, e.g. [1, 5, 25, 50]")
    for i, s in enumerate(steps):
        if not 0 < s <= 100:
            raise ValueError(f"steps_percent[{i}] is {s}; each step is in (0, 100]")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps_percent must increase: {steps}")
    return steps


class VersionConfig(_Strict):
    """One version of a deployment: what its replicas run, and how many."""

    name: str = Field(min_length=1, max_length=63, description="the version's label, e.g. v2")
    model: str | None = Field(None, description="default: the deployment's model")
    simulate: str | None = Field(None, description="GPU:MODEL; default: the deployment's")
    replica_args: list[str] | None = Field(
        None,
        description="replica flags (engine arguments, --lora NAME=PATH...); default: the "
        "deployment's",
    )
    replicas: int | None = Field(None, ge=1, description="default: the deployment's replicas")

    @field_validator("name")
    @classmethod
    def _label(cls, name: str) -> str:
        if not all(ch.isalnum() or ch in "-_." for ch in name):
            raise ValueError(
                f"version name {name!r} may hold letters, digits, '-', '_' and '.' only"
            )
        return name


class AnalysisConfig(_Strict):
    """The gates of canary analysis (``policy.analysis``)."""

    interval_s: float = Field(10.0, gt=0, description="how often the canary is judged")
    metrics: list[Metric] = Field(
        default_factory=lambda: list(ALL_METRICS),
        description="checks to run: ttft, tpot, errors, goodput",
    )
    min_samples: int = Field(
        20, ge=5, description="per version and metric, before a check may judge"
    )
    max_false_rollback: float = Field(
        0.005,
        gt=0,
        lt=0.5,
        description="chance of rolling back a candidate equal to the baseline, shared over "
        "every check of every look",
    )
    min_latency_increase: float = Field(
        0.05, ge=0, description="relative median TTFT/TPOT increase worth a rollback"
    )
    min_error_rate_increase: float = Field(
        0.005, ge=0, description="error-rate increase (absolute, 0.005 = 0.5 points)"
    )
    min_goodput_drop: float = Field(
        0.02, ge=0, description="drop in the share of answers within the SLO (absolute)"
    )

    @field_validator("metrics")
    @classmethod
    def _some(cls, metrics: list[Metric]) -> list[Metric]:
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"analysis.metrics names a metric twice: {metrics}")
        return metrics


class RolloutSettings(_Strict):
    """How rollouts of a deployment run (the defaults of ``shipit rollout start``)."""

    version: str = Field("v1", min_length=1, description="the label of what runs now")
    strategy: Strategy = "canary"
    steps_percent: list[float] = Field(
        default_factory=lambda: [1.0, 5.0, 25.0, 50.0],
        description="canary traffic shares, each baked and judged; then 100 %",
    )
    bake_s: float = Field(60.0, gt=0, description="time at each step before moving on")
    keep_old_s: float = Field(
        60.0,
        ge=0,
        description="after the switch or promotion, the old version is kept this "
        "long for an instant rollback, then drained and stopped",
    )
    warmup_timeout_s: float = Field(
        300.0, gt=0, description="longest wait for the candidate's replicas to warm up"
    )
    max_hold_s: float | None = Field(
        None,
        gt=0,
        description="roll back when a step lacks samples this long past its bake; "
        "none: hold until promoted or aborted by hand",
    )
    auto_promote: bool = Field(True, description="false: wait for `shipit rollout promote`")
    shadow_percent: float = Field(
        10.0, gt=0, le=100, description="shadow: share of live requests mirrored to the candidate"
    )
    shadow_max_in_flight: int = Field(8, ge=1, description="shadow: mirrored requests at once")
    analysis: AnalysisConfig = AnalysisConfig()
    versions: list[VersionConfig] = Field(
        default_factory=list, description="versions a rollout may bring up, by name"
    )

    @field_validator("steps_percent")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        return check_steps(steps)

    @model_validator(mode="after")
    def _names(self) -> Self:
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"rollout.versions names a version twice: {names}")
        if self.version in names:
            raise ValueError(
                f"rollout.versions lists {self.version!r}, the version running now "
                "(rollout.version); name the new one differently"
            )
        return self


class RolloutSpec(_Strict):
    """One rollout: the policy's ``config``. Built from a deployment's ``RolloutSettings``
    and what ``shipit rollout start`` overrides."""

    deployment: str
    baseline: str
    candidate: VersionConfig
    strategy: Strategy = "canary"
    steps_percent: list[float] = Field(default_factory=lambda: [1.0, 5.0, 25.0, 50.0])
    bake_s: float = Field(60.0, gt=0)
    keep_old_s: float = Field(60.0, ge=0)
    warmup_timeout_s: float = Field(300.0, gt=0)
    max_hold_s: float | None = Field(None, gt=0)
    auto_promote: bool = True
    shadow_percent: float = Field(10.0, gt=0, le=100)
    shadow_max_in_flight: int = Field(8, ge=1)
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.candidate.name == self.baseline:
            raise ValueError(
                f"the candidate version is named {self.baseline!r}, like the baseline; "
                "give the new version another name"
            )
        check_steps(self.steps_percent)
        return self

    @property
    def planned_looks(self) -> int:
        """Analyses a rollout that passes every step takes: what the false-rollback budget
        is shared over."""
        per_step = max(1, int(self.bake_s // self.analysis.interval_s))
        steps = len(self.steps_percent) if self.strategy == "canary" else 0
        after = max(1, int(self.keep_old_s // self.analysis.interval_s)) if self.keep_old_s else 0
        # At least one: a blue-green switch without a keep window still judges once.
        return max(1, steps * per_step + after)


def spec_for(
    settings: RolloutSettings,
    deployment: str,
    candidate: VersionConfig,
    **overrides: object,
) -> RolloutSpec:
    """The spec of a rollout of ``deployment`` to ``candidate`` with ``settings``' defaults;
    ``overrides`` (``strategy``, ``steps_percent``, ``bake_s``...) win when not None."""
    data: dict[str, object] = {
        "deployment": deployment,
        "baseline": settings.version,
        "candidate": candidate,
        "strategy": settings.strategy,
        "steps_percent": settings.steps_percent,
        "bake_s": settings.bake_s,
        "keep_old_s": settings.keep_old_s,
        "warmup_timeout_s": settings.warmup_timeout_s,
        "max_hold_s": settings.max_hold_s,
        "auto_promote": settings.auto_promote,
        "shadow_percent": settings.shadow_percent,
        "shadow_max_in_flight": settings.shadow_max_in_flight,
        "analysis": settings.analysis,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    return RolloutSpec.model_validate(data)
