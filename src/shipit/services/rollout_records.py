"""The records the rollout controller keeps and shows: per-version analysis windows, the JSON
form of a rollout's state (persisted so a restart resumes it), and the JSON of an analysis and
of a shadow diff report (``/shipit/rollouts``). No IO, no decisions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from shipit.policy import rollout
from shipit.policy.analysis import VersionWindow
from shipit.policy.rollout import Phase, RolloutDecision, RolloutState
from shipit.policy.sequential import ErrorEvidence
from shipit.policy.shadow import ShadowReport

WINDOW_CAP = 4000  # samples kept per version and metric


class Windows:
    """Per-version figures since the last reset (the analysis window), capped."""

    def __init__(self, cap: int = WINDOW_CAP) -> None:
        self.cap = cap
        self._data: dict[str, dict[str, Any]] = {}

    def _of(self, version: str) -> dict[str, Any]:
        data = self._data.get(version)
        if data is None:
            data = self._data[version] = {
                "ttft": deque(maxlen=self.cap),
                "tpot": deque(maxlen=self.cap),
                "requests": 0,
                "errors": 0,
                "answered": 0,
                "slo_met": 0,
            }
        return data

    def outcome(self, version: str, ok: bool) -> None:
        data = self._of(version)
        data["requests"] += 1
        data["errors"] += not ok

    def answer(self, version: str, ttft_s: float | None, tpot_s: float | None, met: bool) -> None:
        data = self._of(version)
        data["answered"] += 1
        data["slo_met"] += met
        if ttft_s is not None:
            data["ttft"].append(ttft_s)
        if tpot_s is not None:
            data["tpot"].append(tpot_s)

    def view(self, version: str) -> VersionWindow:
        d = self._of(version)
        return VersionWindow(
            tuple(d["ttft"]), tuple(d["tpot"]), d["requests"], d["errors"], d["answered"],
            d["slo_met"],
        )  # fmt: skip

    def reset(self, version: str) -> None:
        self._data.pop(version, None)


def state_dict(state: RolloutState, now_s: float) -> dict[str, Any]:
    return {
        "phase": state.phase.value,
        "step": state.step,
        "looks": state.looks,
        "candidate_percent": state.candidate_percent,
        "elapsed_in_step_s": now_s - state.step_started_s,
        "errors": {
            "log_lrs": list(state.errors.log_lrs),
            "counts": [
                state.errors.errors_candidate,
                state.errors.requests_candidate,
                state.errors.errors_baseline,
                state.errors.requests_baseline,
            ],
        },
    }


def state_from(raw: Mapping[str, Any], now_s: float) -> RolloutState:
    base = RolloutState(
        Phase(raw["phase"]),
        now_s,
        int(raw["step"]),
        now_s,
        None,
        int(raw["looks"]),
        float(raw["candidate_percent"]),
        _evidence(raw.get("errors")),
    )
    return rollout.resume(base, now_s, float(raw["elapsed_in_step_s"]))


def _evidence(raw: Any) -> ErrorEvidence:
    """The canary's errors evidence as saved; a state saved before it was kept starts afresh
    (the test is then only more cautious)."""
    if not isinstance(raw, Mapping):
        return ErrorEvidence()
    k_c, n_c, k_b, n_b = (int(v) for v in raw["counts"])
    return ErrorEvidence(tuple(float(v) for v in raw["log_lrs"]), k_c, n_c, k_b, n_b)


def analysis_dict(decision: RolloutDecision | None) -> dict[str, Any] | None:
    if decision is None or decision.analysis is None:
        return None
    a = decision.analysis
    return {
        "verdict": a.verdict.value,
        "reason": a.reason,
        "checks": [
            {
                "metric": c.metric,
                "verdict": c.verdict.value,
                "candidate": c.candidate,
                "baseline": c.baseline,
                "effect": c.effect,
                "p_value": c.p_value,
                "alpha": c.alpha,
                "n_candidate": c.n_candidate,
                "n_baseline": c.n_baseline,
            }
            for c in a.checks
        ],
    }


def shadow_dict(report: ShadowReport, decisions: Mapping[str, int]) -> dict[str, Any]:
    return {
        "pairs": report.pairs,
        "reason": report.reason,
        "live_error_rate": report.live_error_rate,
        "shadow_error_rate": report.shadow_error_rate,
        "latency": [
            {
                "metric": d.metric,
                "median_s": d.median_s,
                "low_s": d.low_s,
                "high_s": d.high_s,
                "n": d.n,
            }
            for d in report.latency
        ],
        "compared": report.compared,
        "exact_match_rate": report.exact_match_rate,
        "mean_edit_distance": report.mean_edit_distance,
        "mean_length_delta": report.mean_length_delta,
        "mirror_decisions": dict(decisions),
    }
