"""Rollouts in simulated time: the live rollout policy judging simulated traffic, many trials fast.

Each version answers with per-request TTFT and TPOT drawn from a log-normal around its
medians (``VersionModel``; ``version_model`` takes the medians from the planner's roofline for
a GPU and model, so "a slower GPU" is a real catalog entry) and fails a share of requests.
Requests arrive as a Poisson stream; each tick the policy's weights split them between the
versions. The driver keeps each version's window (the last ``window_cap`` samples, as the
live driver does), resets windows when a decision says so, and calls
``policy.rollout.decide`` every ``tick_s``. ``run_trial`` returns what happened: the outcome,
its reason, how many requests the candidate served before the end, and when.

What is left out, stated: load does not change latency here (a candidate at 1 % is as fast as
at 50 %), replicas do not start or fail, and a request is one draw, not an engine simulation
(``sim.fleet`` is that). It must not sleep, read the clock or do IO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from shipit.config.rollout import RolloutSpec
from shipit.engine.sim_timing import ReplicaModel, StepShape
from shipit.policy.analysis import VersionWindow
from shipit.policy.rollout import Phase, RolloutDecision, RolloutSnapshot, decide, start


@dataclass(frozen=True, slots=True)
class VersionModel:
    """How one version answers."""

    ttft_median_s: float
    tpot_median_s: float
    ttft_sigma: float = 0.35  # log-normal spread of one request's TTFT
    tpot_sigma: float = 0.15
    error_share: float = 0.0
    slo_ttft_s: float | None = None  # goodput: answers within both SLOs
    slo_tpot_s: float | None = None

    def scaled(
        self, *, ttft: float = 1.0, tpot: float = 1.0, error_share: float | None = None
    ) -> VersionModel:
        return VersionModel(
            self.ttft_median_s * ttft,
            self.tpot_median_s * tpot,
            self.ttft_sigma,
            self.tpot_sigma,
            self.error_share if error_share is None else error_share,
            self.slo_ttft_s,
            self.slo_tpot_s,
        )


def version_model(
    gpu: str, model: str, *, prompt_tokens: int = 512, batch: int = 16, context_tokens: int = 1024
) -> VersionModel:
    """Medians from the roofline: TTFT is one prefill of ``prompt_tokens`` beside a decode
    batch, TPOT one decode step of ``batch`` sequences at ``context_tokens``."""
    timing = ReplicaModel(gpu=gpu, model=model).resolve()
    step = timing.step_time
    ttft = step(StepShape(prompt_tokens, 1, prompt_tokens // 2, batch - 1, context_tokens))
    tpot = step(StepShape.of_decodes(batch, batch * context_tokens))
    return VersionModel(ttft, tpot)


@dataclass(slots=True)
class _Window:
    ttft: list[np.ndarray] = field(default_factory=list)
    tpot: list[np.ndarray] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    answered: int = 0
    slo_met: int = 0

    def view(self, cap: int) -> VersionWindow:
        ttft = np.concatenate(self.ttft)[-cap:] if self.ttft else np.empty(0)
        tpot = np.concatenate(self.tpot)[-cap:] if self.tpot else np.empty(0)
        self.ttft, self.tpot = [ttft], [tpot]
        return VersionWindow(
            tuple(ttft.tolist()),
            tuple(tpot.tolist()),
            self.requests,
            self.errors,
            self.answered,
            self.slo_met,
        )


@dataclass(frozen=True, slots=True)
class Trial:
    """One simulated rollout."""

    phase: Phase  # COMPLETE (promoted) or ROLLED_BACK, or where it stood at the end
    reason_code: str
    reason: str
    exposed: int  # requests the candidate served
    requests: int  # requests in all
    ended_s: float
    candidate_percent_at_end: float  # the share it had when the rollout ended (before rollback)
    decisions: tuple[RolloutDecision, ...] = ()


def serve(rng: np.random.Generator, model: VersionModel, n: int, window: _Window) -> None:
    """``n`` requests answered by ``model`` into ``window``."""
    if n <= 0:
        return
    errors = int(rng.binomial(n, model.error_share)) if model.error_share else 0
    ok = n - errors
    ttft = rng.lognormal(math.log(model.ttft_median_s), model.ttft_sigma, ok)
    tpot = rng.lognormal(math.log(model.tpot_median_s), model.tpot_sigma, ok)
    met = np.ones(ok, dtype=bool)
    if model.slo_ttft_s is not None:
        met &= ttft <= model.slo_ttft_s
    if model.slo_tpot_s is not None:
        met &= tpot <= model.slo_tpot_s
    window.ttft.append(ttft)
    window.tpot.append(tpot)
    window.requests += n
    window.errors += errors
    window.answered += ok
    window.slo_met += int(met.sum())


def run_trial(
    spec: RolloutSpec,
    baseline: VersionModel,
    candidate: VersionModel,
    *,
    rate_per_s: float,
    seed: int,
    tick_s: float = 1.0,
    warmup_s: float = 10.0,
    max_s: float = 24 * 3600.0,
    window_cap: int = 4000,
    keep_decisions: bool = False,
) -> Trial:
    """One rollout of ``candidate`` over ``baseline`` under Poisson traffic at ``rate_per_s``."""
    rng = np.random.default_rng(seed)
    names = (spec.baseline, spec.candidate.name)
    windows = {v: _Window() for v in names}
    models = {spec.baseline: baseline, spec.candidate.name: candidate}
    state = start(spec, 0.0)
    percent = 0.0
    now = 0.0
    exposed = total = 0
    decisions: list[RolloutDecision] = []
    decision: RolloutDecision | None = None
    before = 0.0
    wanted = spec.candidate.replicas or 1
    while now < max_s and not state.phase.done:
        n = int(rng.poisson(rate_per_s * tick_s)) if now > 0 else 0
        to_candidate = int(rng.binomial(n, percent / 100.0)) if n else 0
        serve(rng, models[spec.baseline], n - to_candidate, windows[spec.baseline])
        serve(rng, models[spec.candidate.name], to_candidate, windows[spec.candidate.name])
        exposed += to_candidate
        total += n
        snap = RolloutSnapshot(
            now,
            1,
            wanted if now >= warmup_s else 0,
            windows[spec.baseline].view(window_cap),
            windows[spec.candidate.name].view(window_cap),
        )
        before = state.candidate_percent
        decision, state = decide(spec, snap, state)
        if keep_decisions:
            decisions.append(decision)
        for version in decision.reset:
            windows[version] = _Window()
        percent = dict(decision.weights)[spec.candidate.name]
        now += tick_s
    if decision is None:
        raise ValueError(f"max_s ({max_s}) left no tick to run")
    return Trial(
        state.phase,
        decision.reason_code,
        decision.reason,
        exposed,
        total,
        now - tick_s,
        before,
        tuple(decisions),
    )
