"""The rollout policy: blue-green and canary, as a pure ``decide(spec, snapshot, state)``.

One rollout moves a deployment's traffic from the ``baseline`` version to a ``candidate``. The
driver (``services.rollouts`` live, ``sim.rollout`` in simulation) starts the candidate's
replicas, warms them up, and calls ``decide`` every tick with a ``RolloutSnapshot``: how many
replicas of each version are ready (the candidate's only once warmed up), what each version
served since the window was last reset (``policy.analysis.VersionWindow``) and an operator's
command, if any. The decision says which traffic weights to apply (``weights``, always the whole
intended split, so applying it twice is harmless), which versions' windows to reset, and which
version to drain and stop; its ``reason_code`` is one of ``warming``, ``switch``, ``step``,
``bake``, ``hold``, ``promote``, ``rollback``, ``complete``, ``abort`` and its ``reason`` quotes
the figures.

- **Canary**: ``steps_percent`` in turn; at each, the candidate and the baseline are compared
  over the same window every ``analysis.interval_s`` (a failed check rolls back at once, not at
  the end of the bake) and once ``bake_s`` has passed; a step whose checks lack samples holds
  (up to ``max_hold_s``, then rolls back). After the last step: promote (all traffic to the
  candidate), keep the baseline ``keep_old_s`` for an instant rollback, then complete (stop it).
- **Blue-green**: once the candidate is warm, all traffic switches at once; the baseline is
  kept ``keep_old_s``. In this kept phase (both strategies) the candidate's window is compared
  with the baseline's last window before the switch, and a failure rolls back.

The false-rollback budget (``analysis.max_false_rollback``) is shared equally among the
metrics. A latency or goodput check spends its share over every planned look (Bonferroni); the
canary's errors check is sequential (``policy.sequential``: its evidence is carried from step to
step in the state and stays valid however often it is looked at), so it spends its whole share
on one test of the pooled canary. Either way a candidate equal to the baseline is rolled back at
most that often.

Sessions stay on one version because the routing filter (``version_weight``) places a session
key at a fixed point of [0, 1): a growing candidate share only ever takes sessions from the
baseline. No clock, no IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from shipit.config.rollout import RolloutSpec
from shipit.policy.analysis import Analysis, Verdict, VersionWindow, compare
from shipit.policy.sequential import ErrorEvidence


class Phase(enum.Enum):
    WARMING = "warming"  # the candidate's replicas start and warm up; no traffic on them
    CANARY = "canary"  # stepping through steps_percent
    SHADOW = "shadow"  # no user traffic on the candidate; a share of requests mirrored to it
    KEPT = "kept"  # all traffic on the candidate; the baseline kept for instant rollback
    COMPLETE = "complete"  # the baseline is stopped: the candidate is the deployment
    ROLLED_BACK = "rolled_back"  # all traffic on the baseline; the candidate is stopped

    @property
    def done(self) -> bool:
        return self in (Phase.COMPLETE, Phase.ROLLED_BACK)


class Command(enum.Enum):
    """What an operator asked for (``shipit rollout promote|abort``)."""

    PROMOTE = "promote"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class RolloutSnapshot:
    now_s: float
    baseline_ready: int
    candidate_ready: int  # ready and warmed up
    baseline: VersionWindow = field(default_factory=VersionWindow)
    candidate: VersionWindow = field(default_factory=VersionWindow)
    command: Command | None = None


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase = Phase.WARMING
    started_s: float = 0.0
    step: int = -1  # index in steps_percent (canary), -1 before the first
    step_started_s: float = 0.0  # when the current step (or phase) began
    last_look_s: float | None = None  # the last analysis
    looks: int = 0
    candidate_percent: float = 0.0
    errors: ErrorEvidence = field(default_factory=ErrorEvidence)  # the canary's passed steps


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    reason_code: str
    reason: str
    weights: tuple[tuple[str, float], ...]  # the traffic split to apply (percent per version)
    phase: Phase
    reset: frozenset[str] = frozenset()  # versions whose windows start afresh
    stop_version: str | None = None  # drain and stop this version's replicas
    analysis: Analysis | None = None


def start(spec: RolloutSpec, now_s: float) -> RolloutState:
    """The state of a rollout that begins now (the candidate's replicas are starting)."""
    return RolloutState(Phase.WARMING, now_s, -1, now_s)


def alpha(spec: RolloutSpec) -> float:
    """The significance of one check: the false-rollback budget over every planned check."""
    return spec.analysis.max_false_rollback / (spec.planned_looks * len(spec.analysis.metrics))


def errors_alpha(spec: RolloutSpec) -> float:
    """The significance of the canary's sequential errors check: its metric's whole share of
    the false-rollback budget (always valid, so not divided among looks)."""
    return spec.analysis.max_false_rollback / len(spec.analysis.metrics)


def weights(spec: RolloutSpec, candidate_percent: float) -> tuple[tuple[str, float], ...]:
    return (
        (spec.baseline, round(100.0 - candidate_percent, 6)),
        (spec.candidate.name, round(candidate_percent, 6)),
    )


def _decision(
    spec: RolloutSpec,
    state: RolloutState,
    code: str,
    reason: str,
    *,
    reset: frozenset[str] = frozenset(),
    stop_version: str | None = None,
    analysis: Analysis | None = None,
) -> RolloutDecision:
    split = weights(spec, state.candidate_percent)
    return RolloutDecision(code, reason, split, state.phase, reset, stop_version, analysis)


def _rollback(
    spec: RolloutSpec,
    state: RolloutState,
    now_s: float,
    code: str,
    why: str,
    analysis: Analysis | None = None,
) -> tuple[RolloutDecision, RolloutState]:
    after = replace(state, phase=Phase.ROLLED_BACK, candidate_percent=0.0, step_started_s=now_s)
    reason = f"rolled back to {spec.baseline}: {why}"
    stop = spec.candidate.name
    return _decision(spec, after, code, reason, stop_version=stop, analysis=analysis), after


def _promote(
    spec: RolloutSpec, state: RolloutState, now_s: float, code: str, why: str
) -> tuple[RolloutDecision, RolloutState]:
    after = replace(
        state, phase=Phase.KEPT, candidate_percent=100.0, step_started_s=now_s, last_look_s=None
    )
    kept = f"; {spec.baseline} kept {spec.keep_old_s:g} s for an instant rollback"
    reset = frozenset({spec.candidate.name})
    return _decision(spec, after, code, why + kept, reset=reset), after


def decide(
    spec: RolloutSpec, snapshot: RolloutSnapshot, state: RolloutState
) -> tuple[RolloutDecision, RolloutState]:
    """The next step of the rollout; see the module's docstring."""
    now = snapshot.now_s
    if state.phase.done:
        return _decision(spec, state, state.phase.value, f"rollout {state.phase.value}"), state
    if snapshot.command is Command.ABORT:
        where = f"{state.phase.value}, candidate at {state.candidate_percent:g} %"
        return _rollback(spec, state, now, "abort", f"aborted by the operator ({where})")
    if state.phase is Phase.WARMING:
        return _warming(spec, snapshot, state)
    if state.phase is Phase.KEPT:
        return _kept(spec, snapshot, state)
    if state.phase is Phase.SHADOW:
        return _shadow(spec, snapshot, state)
    return _canary(spec, snapshot, state)


def _warming(
    spec: RolloutSpec, snapshot: RolloutSnapshot, state: RolloutState
) -> tuple[RolloutDecision, RolloutState]:
    now = snapshot.now_s
    wanted = spec.candidate.replicas or 1
    waited = now - state.started_s
    if snapshot.candidate_ready < wanted:
        if waited >= spec.warmup_timeout_s:
            why = (
                f"{snapshot.candidate_ready} of {wanted} {spec.candidate.name} replicas warmed "
                f"up within {spec.warmup_timeout_s:g} s"
            )
            return _rollback(spec, state, now, "rollback", why)
        why = (
            f"{snapshot.candidate_ready} of {wanted} {spec.candidate.name} replicas warmed up "
            f"after {waited:.0f} s; no traffic on them yet"
        )
        return _decision(spec, state, "warming", why), state
    if spec.strategy == "shadow" and snapshot.command is not Command.PROMOTE:
        after = replace(state, phase=Phase.SHADOW, step_started_s=now)
        why = (
            f"{wanted} {spec.candidate.name} replicas warmed up in {waited:.0f} s; mirroring "
            f"{spec.shadow_percent:g} % of requests to them, users served by {spec.baseline}"
        )
        return _decision(spec, after, "shadow", why, reset=frozenset({spec.candidate.name})), after
    if spec.strategy == "blue_green" or snapshot.command is Command.PROMOTE:
        why = (
            f"switched all traffic to {spec.candidate.name}: {wanted} replicas warmed up "
            f"in {waited:.0f} s"
        )
        return _promote(spec, state, now, "switch", why)
    return _enter_step(spec, state, now, 0, f"{wanted} replicas warmed up in {waited:.0f} s")


def _enter_step(
    spec: RolloutSpec, state: RolloutState, now_s: float, step: int, why: str
) -> tuple[RolloutDecision, RolloutState]:
    percent = spec.steps_percent[step]
    after = replace(
        state,
        phase=Phase.CANARY,
        step=step,
        step_started_s=now_s,
        last_look_s=None,
        candidate_percent=percent,
    )
    n = len(spec.steps_percent)
    reason = f"step {step + 1}/{n}: {percent:g} % of traffic to {spec.candidate.name} ({why})"
    reset = frozenset({spec.baseline, spec.candidate.name})
    return _decision(spec, after, "step", reason, reset=reset), after


def _look_due(spec: RolloutSpec, state: RolloutState, now_s: float, baked: bool) -> bool:
    last = state.last_look_s if state.last_look_s is not None else state.step_started_s
    return baked or now_s - last >= spec.analysis.interval_s


def _canary(
    spec: RolloutSpec, snapshot: RolloutSnapshot, state: RolloutState
) -> tuple[RolloutDecision, RolloutState]:
    now = snapshot.now_s
    step_no = f"step {state.step + 1}/{len(spec.steps_percent)} ({state.candidate_percent:g} %)"
    if snapshot.command is Command.PROMOTE:
        return _promote(spec, state, now, "promote", f"promoted by the operator at {step_no}")
    elapsed = now - state.step_started_s
    baked = elapsed >= spec.bake_s
    if not _look_due(spec, state, now, baked):
        why = f"{step_no}: baked {elapsed:.0f} of {spec.bake_s:g} s"
        return _decision(spec, state, "bake", why), state
    result = compare(
        spec.analysis,
        snapshot.candidate,
        snapshot.baseline,
        alpha=alpha(spec),
        errors_before=state.errors,
        errors_alpha=errors_alpha(spec),
    )
    state = replace(state, last_look_s=now, looks=state.looks + 1)
    if result.verdict is Verdict.FAIL:
        return _rollback(
            spec, state, now, "rollback", f"{step_no}: {result.reason}", analysis=result
        )
    if not baked:
        why = f"{step_no}: baked {elapsed:.0f} of {spec.bake_s:g} s; {result.verdict.value}"
        return _decision(spec, state, "bake", why, analysis=result), state
    if result.verdict is Verdict.INSUFFICIENT:
        held = elapsed - spec.bake_s
        if spec.max_hold_s is not None and held >= spec.max_hold_s:
            why = f"{step_no}: too few samples after {held:.0f} s of hold: {result.reason}"
            return _rollback(spec, state, now, "rollback", why, analysis=result)
        why = f"{step_no}: hold, {result.reason}"
        return _decision(spec, state, "hold", why, analysis=result), state
    if state.step + 1 < len(spec.steps_percent):
        cand, base = snapshot.candidate, snapshot.baseline
        # The step's window is reset on entering the next: its errors join the evidence.
        evidence = state.errors.add(cand.errors, cand.requests, base.errors, base.requests)
        state = replace(state, errors=evidence)
        why = f"{step_no} passed: {_short(result)}"
        decision, after = _enter_step(spec, state, now, state.step + 1, why)
        return replace(decision, analysis=result), after  # the look that let it step
    if not spec.auto_promote:
        why = f"{step_no} passed; waiting for `shipit rollout promote` ({_short(result)})"
        return _decision(spec, state, "hold", why, analysis=result), state
    why = f"promoted {spec.candidate.name}: every step passed ({_short(result)})"
    decision, after = _promote(spec, state, now, "promote", why)
    return replace(decision, analysis=result), after


def _kept(
    spec: RolloutSpec, snapshot: RolloutSnapshot, state: RolloutState
) -> tuple[RolloutDecision, RolloutState]:
    """All traffic on the candidate; its window is judged against the baseline's last one
    (from before the switch) until ``keep_old_s`` runs out, then the baseline stops."""
    now = snapshot.now_s
    elapsed = now - state.step_started_s
    over = elapsed >= spec.keep_old_s
    result: Analysis | None = None
    if _look_due(spec, state, now, over):
        result = compare(spec.analysis, snapshot.candidate, snapshot.baseline, alpha=alpha(spec))
        state = replace(state, last_look_s=now, looks=state.looks + 1)
        if result.verdict is Verdict.FAIL:
            why = f"after the switch, against {spec.baseline} before it: {result.reason}"
            return _rollback(spec, state, now, "rollback", why, analysis=result)
    if not over:
        why = (
            f"all traffic on {spec.candidate.name}; {spec.baseline} kept "
            f"{spec.keep_old_s - elapsed:.0f} s more"
        )
        return _decision(spec, state, "bake", why, analysis=result), state
    after = replace(state, phase=Phase.COMPLETE, step_started_s=now)
    why = f"{spec.candidate.name} serves the deployment; stopping {spec.baseline}"
    return _decision(
        spec, after, "complete", why, stop_version=spec.baseline, analysis=result
    ), after


def _shadow(
    spec: RolloutSpec, snapshot: RolloutSnapshot, state: RolloutState
) -> tuple[RolloutDecision, RolloutState]:
    """Mirroring until the operator decides: ``promote`` switches all traffic to the candidate
    (as blue-green does), ``abort`` stops it. The diff report is the driver's."""
    now = snapshot.now_s
    if snapshot.command is Command.PROMOTE:
        why = f"promoted by the operator after {now - state.step_started_s:.0f} s of shadow"
        return _promote(spec, state, now, "promote", why)
    why = (
        f"shadow for {now - state.step_started_s:.0f} s: {spec.shadow_percent:g} % mirrored to "
        f"{spec.candidate.name}; promote or abort when the diff report satisfies you"
    )
    return _decision(spec, state, "shadow", why), state


def _short(result: Analysis) -> str:
    parts = []
    for c in result.checks:
        if c.metric in ("ttft", "tpot"):
            parts.append(f"{c.metric} {c.effect:+.1%}")
        else:
            parts.append(f"{c.metric} {c.effect:+.2%}")
    return ", ".join(parts)


def resume(state: RolloutState, now_s: float, elapsed_in_step_s: float) -> RolloutState:
    """A persisted state brought back after a restart: the driver's clock started afresh, so
    the step keeps the time it had already baked and the next look is a full interval away."""
    started = now_s - elapsed_in_step_s
    return replace(
        state,
        started_s=now_s if state.phase is Phase.WARMING else started,
        step_started_s=started,
        last_look_s=None,
    )
