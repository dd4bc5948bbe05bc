"""The rollout controller's Prometheus series: traffic share per version, canary step, phase,
decisions by a bounded reason, and the analysis window's TTFT/TPOT medians per version.

``RolloutPublisher`` is handed every decision the controller logs; it keeps series only for the
baseline and the candidate of each deployment's latest rollout (a new rollout removes the old
versions' series), so label cardinality stays at two versions per deployment. No IO.
"""

from __future__ import annotations

import contextlib

from shipit.policy.analysis import Verdict
from shipit.policy.rollout import Command, Phase, RolloutDecision, RolloutState
from shipit.telemetry import catalog as cat
from shipit.telemetry.instruments import RolloutMetrics

_OPERATOR_CODES = ("promote", "switch", "abort", "rollback")


def decision_reason(decision: RolloutDecision, command: Command | None) -> str:
    """A bounded label for why ``decision`` was taken (one of ``catalog.ROLLOUT_REASONS``).

    ``operator`` when a command drove it; else the failed metric of a failed analysis (``ttft``,
    ``tpot``, ``errors``, ``goodput``), the analysis verdict (``pass``, ``insufficient``),
    ``warmup_timeout`` for a rollback without an analysis, or ``none``.
    """
    if command is not None and decision.reason_code in _OPERATOR_CODES:
        return "operator"
    analysis = decision.analysis
    if analysis is not None:
        if analysis.verdict is Verdict.FAIL:
            for check in analysis.checks:
                if check.verdict is Verdict.FAIL and check.metric in cat.ROLLOUT_REASONS:
                    return check.metric
        return analysis.verdict.value
    if decision.reason_code == "rollback":
        return "warmup_timeout"
    return "none"


class RolloutPublisher:
    def __init__(self, metrics: RolloutMetrics) -> None:
        self.metrics = metrics
        self._versions: dict[str, set[str]] = {}

    def begin(self, deployment: str, state: RolloutState, versions: tuple[str, str]) -> None:
        """A rollout starts: drop the series of versions of earlier rollouts, show the state."""
        m = self.metrics
        for old in self._versions.get(deployment, set()) - set(versions):
            for gauge, labels in ((m.traffic_share, ()), (m.window_median, ("ttft", "tpot"))):
                for extra in labels or (None,):
                    values = (deployment, old) + ((extra,) if extra else ())
                    with contextlib.suppress(KeyError):  # never set
                        gauge.remove(*values)
        self._versions[deployment] = set(versions)
        self.show(deployment, state, ((versions[0], 100.0), (versions[1], 0.0)))

    def show(
        self, deployment: str, state: RolloutState, weights: tuple[tuple[str, float], ...]
    ) -> None:
        """The gauges: traffic share per version (``weights`` in percent), step and phase."""
        m = self.metrics
        for version, percent in weights:
            self._versions.setdefault(deployment, set()).add(version)
            m.traffic_share.labels(deployment=deployment, version=version).set(percent / 100.0)
        step = state.step + 1 if state.phase is Phase.CANARY else 0
        m.step.labels(deployment=deployment).set(step)
        for phase in Phase:
            value = 1.0 if phase is state.phase else 0.0
            m.state.labels(deployment=deployment, state=phase.value).set(value)

    def decided(
        self,
        deployment: str,
        decision: RolloutDecision,
        command: Command | None,
        versions: tuple[str, str],
    ) -> None:
        """One logged decision: count it and keep the analysis' medians (``versions`` is
        (baseline, candidate))."""
        reason = decision_reason(decision, command)
        self.metrics.decisions.labels(
            deployment=deployment, decision=decision.reason_code, reason=reason
        ).inc()
        if decision.analysis is None:
            return
        for check in decision.analysis.checks:
            if check.metric not in ("ttft", "tpot"):
                continue
            for version, value in zip(versions, (check.baseline, check.candidate), strict=True):
                if check.n_baseline if version == versions[0] else check.n_candidate:
                    self.metrics.window_median.labels(
                        deployment=deployment, version=version, metric=check.metric
                    ).set(value)
