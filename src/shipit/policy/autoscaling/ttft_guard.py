"""The TTFT guard: lowers the per-replica target while replicas miss the TTFT SLO themselves.

What a replica can carry at no cost to its time to first token depends on the prompts: short
prompts fit its slots; long ones queue behind each other's prefill inside the replica however
few requests it holds. The guard learns that from what the replicas show, as a factor on the
per-replica target: each first token comes with its time inside the replica (dispatch to first
token, the gateway's queue excluded: that is the demand rules' business) and its prompt's
prefill alone on an idle replica. Requests whose prefill alone exceeds the SLO are left out (no
fleet serves them in time). When more than 1 % of the others miss the SLO (``ttft_slo_s`` is a
P99 target), the factor is cut by ``CUT``, at most once a cold start plus a panic window (so the
replicas that cut started are ready and seen before the next cut); when 200 first tokens in a
stable window or longer missed no more than half that share, it is raised back by ``RAISE`` up
to 1. Multiplicative decrease, slow increase: the fleet converges on the target at which the
replicas keep the SLO, and follows the workload when its prompts change. Pure; off (factor 1)
unless ``ttft_slo_s`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipit.config.autoscaling import AutoscalingConfig

ALLOWED = 0.01  # ttft_slo_s is a P99 target
CUT = 0.7
RAISE = 1.2
ENOUGH = 200  # first tokens before the factor may rise: 1 % of them is 2 requests


@dataclass(frozen=True, slots=True)
class GuardState:
    factor: float = 1.0  # on the per-replica target
    seen: int = 0  # feasible first tokens since the factor last changed
    slow: int = 0  # of them, over the SLO inside the replica
    since_s: float | None = None  # when the factor last changed (or counting began)


def guard(
    config: AutoscalingConfig,
    first_tokens: tuple[tuple[float, float], ...],
    now: float,
    state: GuardState,
    floor: float,
) -> tuple[GuardState, str]:
    """The new factor (never under ``floor``) and what changed it ("" when nothing did).
    ``first_tokens``: (time to first token inside the replica, prefill alone), both seconds,
    for the requests whose first token came since the last tick."""
    slo = config.ttft_slo_s
    if slo is None:
        return state, ""
    feasible = [ttft for ttft, alone in first_tokens if alone <= slo]
    seen = state.seen + len(feasible)
    slow = state.slow + sum(1 for ttft in feasible if ttft > slo)
    since = state.since_s if state.since_s is not None else now
    waited = now - since
    if (
        slow >= 2
        and slow > ALLOWED * seen
        and waited >= config.cold_start_s + config.panic_window_s
        and state.factor > floor
    ):
        factor = max(state.factor * CUT, floor)
        why = f"TTFT over {slo:g}s in {slow}/{seen} first tokens: target x{factor:.2f}"
        return GuardState(factor, 0, 0, now), why
    if (
        state.factor < 1.0
        and seen >= ENOUGH
        and slow <= ALLOWED * seen / 2
        and waited >= config.autoscaling_window_s
    ):
        factor = min(state.factor * RAISE, 1.0)
        why = f"TTFT within {slo:g}s in {seen - slow}/{seen} first tokens: target x{factor:.2f}"
        return GuardState(factor, 0, 0, now), why
    return GuardState(state.factor, seen, slow, since), ""
