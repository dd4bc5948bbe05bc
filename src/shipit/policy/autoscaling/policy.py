"""The autoscaling policy: from load, replicas and ``now``, how many replicas to run.

Demand is the arrival rate over the window times the recent mean service time (Little's
law), from the arrival and completion counters the caller puts in the snapshot, or what
replicas carry before any request completed; queued requests drive scale-from-zero
and the cold-start rule, not the steady-state target (a caller with no counters has the
queue counted as load). The policy is pure: ``decide(config, snapshot, state) -> (decision,
state)``; the caller owns the clock, the replicas and the state between ticks, so the same
function runs live and in the fleet simulator.

The rules, each a small function below:
1. demand over a stable window (default 60 s) and a panic window (6 s);
2. desired = ceil(demand / (target * target_utilization * guard)), the target being
   ``target_concurrency`` when set, else what a replica holds, and the guard the TTFT
   guard's factor (``ttft_guard``; 1 unless ``ttft_slo_s`` is set);
3. panic: when the short window needs ``panic_threshold`` x the ready replicas, scale to
   the short-window need at once; that need is recorded, so the scale-down delay runs from
   the burst;
4. the queue and the cold start: new replicas only for what would still wait after
   ``cold_start_s`` on the capacity running or starting; they are not a proposal the
   scale-down delay remembers (they go once the queue drained); nothing stops while queued;
5. hysteresis: a higher target must hold for ``scale_up_delay_s``, a lower one for
   ``scale_down_delay_s``, never less than a cold start (the policy takes the max of the
   recent proposals; before the policy has seen a whole delay, the time before its first
   tick counts as wanting the replicas it found); scale to zero only after
   ``idle_timeout_s`` (never less than a cold start) without load, counted from the last
   load, or from when a replica was first ready if none came yet; scale from zero at once;
6. bounds and rate limits;
7. whom to stop: replicas still starting first, then the ready ones with the fewest
   requests in flight (they drain fastest); replicas that never became ready are replaced.

Replicas are ``core.fleet.ReplicaRecord``s: ``STARTING`` and ``UNHEALTHY`` ones count as
starting (not serving yet, stopped first), ``READY`` ones as ready; ``DRAINING`` and
``STOPPED`` ones are not counted. Which replica is stuck is ``policy.lifecycle.overdue``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import prefill_demand
from shipit.policy.autoscaling.ttft_guard import GuardState, guard
from shipit.policy.lifecycle import overdue

# Not serving yet (or any more): counted like a starting replica, stopped first, and replaced
# when it stays so past startup_timeout_s. DRAINING and STOPPED replicas are not counted.
_STARTING = (ReplicaState.STARTING, ReplicaState.UNHEALTHY)
_COUNTED = (*_STARTING, ReplicaState.READY)


@dataclass(frozen=True, slots=True)
class AutoscalingSnapshot:
    now_s: float
    replicas: tuple[ReplicaRecord, ...]  # the replicas this deployment's pool manages
    queued: int  # requests held at the gateway for this deployment
    # Counters since the deployment began (0 where the caller does not count them): requests
    # arrived at the gateway, requests completed, and their summed service time (dispatch to
    # last token, queueing excluded). The policy differentiates them over its windows.
    arrivals: int = 0
    completed: int = 0
    service_s: float = 0.0
    oldest_wait_s: float = 0.0  # how long the longest-queued request has waited
    # First tokens since the last snapshot: (time to first token inside the replica, the
    # prompt's prefill alone on an idle replica), seconds; read by the TTFT guard.
    first_tokens: tuple[tuple[float, float], ...] = ()
    # The arrivals' prompts' prefill alone on an idle replica, seconds, summed since the
    # deployment began (0: not counted; the prefill demand rule is then off).
    prefill_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AutoscalingState:
    samples: tuple[tuple[float, float], ...] = ()  # (time, load)
    proposals: tuple[tuple[float, float], ...] = ()  # (time, desired before delays)
    panic_until_s: float | None = None
    last_active_s: float | None = None  # the last time load was above zero
    first_tick_s: float | None = None  # when the policy first ran for this deployment
    serving_since_s: float | None = None  # when a replica was first ready
    # (time, arrivals, completed, service seconds) over the stable window
    counters: tuple[tuple[float, int, int, float], ...] = ()
    service_s: float | None = None  # the last known mean service time
    guard: GuardState = field(default_factory=GuardState)
    prefill: prefill_demand.Samples = ()  # (time, arrivals' prefill seconds) over the window


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    target: int
    current: int  # starting + ready replicas the policy counted (draining excluded)
    reason: str
    reason_code: str = "steady"  # scale_up, panic, scale_from_zero, scale_down, scale_to_zero
    panic: bool = False
    stop: tuple[str, ...] = ()  # replicas to drain and stop to reach ``target``
    replace: tuple[str, ...] = ()  # replicas that never became ready: stop them

    @property
    def delta(self) -> int:
        return self.target - self.current


def decide(
    config: AutoscalingConfig, snapshot: AutoscalingSnapshot, state: AutoscalingState
) -> tuple[ScaleDecision, AutoscalingState]:
    now = snapshot.now_s
    stuck = _never_ready(config, snapshot)
    live = [r for r in snapshot.replicas if r.state in _COUNTED and r.replica_id not in stuck]
    ready = sum(r.state is ReplicaState.READY for r in live)
    current = len(live)
    running = float(sum(r.in_flight for r in live))
    load = running + snapshot.queued
    counters = tuple(
        c
        for c in (*state.counters, (now, snapshot.arrivals, snapshot.completed, snapshot.service_s))
        if now - c[0] <= config.autoscaling_window_s
    )
    service_s = _service_s(counters, state.service_s)
    # A caller that does not count arrivals (the counters stay 0) shows no demand beyond
    # what runs but the queue: then the queue is counted as load.
    seen = running if snapshot.arrivals > 0 else load
    samples = _window((*state.samples, (now, seen)), now, config.autoscaling_window_s)
    hold = target_concurrency(config, live)
    guarded, guard_why = guard(config, snapshot.first_tokens, now, state.guard, 1.0 / hold)
    unit = hold * config.target_utilization * guarded.factor
    last_active = now if load > 0 else state.last_active_s
    first_tick = state.first_tick_s if state.first_tick_s is not None else now
    serving_since = state.serving_since_s
    if serving_since is None and ready > 0:
        serving_since = now
    demand = Demand(
        stable=_demand(samples, counters, now, config.autoscaling_window_s, service_s),
        short=_demand(samples, counters, now, config.panic_window_s, service_s),
    )

    prefill = prefill_demand.samples(config, state.prefill, snapshot.prefill_s, now)
    prefill_need, prefill_busy = prefill_demand.need(config, prefill, now)
    panic_until = state.panic_until_s
    short_need = math.ceil(demand.short / unit)
    if ready > 0 and short_need >= config.panic_threshold * ready:
        panic_until = now + config.autoscaling_window_s
    panic = panic_until is not None and now < panic_until
    if panic:
        # The short-window need itself, so the scale-down delay runs from the burst.
        desired = short_need
        why = f"panic: demand {demand.short:.1f} over {config.panic_window_s:g}s / {unit:g}"
    else:
        desired = math.ceil(demand.stable / unit)
        why = f"demand {demand.stable:.1f} over {config.autoscaling_window_s:g}s / {unit:g}"
    why += f" per replica -> {desired}"
    if prefill_need > desired:
        desired = prefill_need
        why += (
            f"; prefill {prefill_busy:.2f} replica-s/s / {config.prefill_utilization:g} "
            f"-> {desired}"
        )
    if guard_why:
        why += f"; {guard_why}"
    lam = _rate(counters, now, config.panic_window_s)
    sustained = max(math.ceil(demand.stable / unit), prefill_need)
    desired, backlog, why = _cold_start_aware(
        config, desired, current, sustained, snapshot.queued, lam, service_s, unit, why
    )

    if config.min_replicas == config.max_replicas:
        # A fixed fleet (``replicas: N`` without autoscaling runs this same loop): the load
        # arithmetic and the delays cannot change the answer, so they are not the reason.
        desired = config.min_replicas
        why = f"fixed at {desired} replicas (min_replicas = max_replicas)"
    horizon = max(config.scale_up_delay_s, down_delay_s(config))
    proposals = _window((*state.proposals, (now, desired)), now, horizon)
    target, why = _apply_delays(config, proposals, now, first_tick, current, desired, why)
    target, why = _apply_backlog(target, current, backlog, snapshot.queued, why)
    idle_since = max(t for t in (last_active, serving_since, first_tick) if t is not None)
    target, why = _apply_zero(config, target, current, load, idle_since, now, why)
    target, why = _apply_bounds(config, target, current, why)
    if config.min_replicas == config.max_replicas:
        why = f"fixed at {config.min_replicas} replicas (min_replicas = max_replicas)"
    decision = ScaleDecision(
        target=target,
        current=current,
        reason=why,
        reason_code=_reason_code(target, current, panic),
        panic=panic,
        stop=choose_victims(live, current - target) if target < current else (),
        replace=stuck,
    )
    new_state = AutoscalingState(
        samples=samples,
        proposals=proposals,
        panic_until_s=panic_until if panic else None,
        last_active_s=last_active,
        first_tick_s=first_tick,
        serving_since_s=serving_since,
        counters=counters,
        service_s=service_s,
        guard=guarded,
        prefill=prefill,
    )
    return decision, new_state


@dataclass(frozen=True, slots=True)
class Demand:
    stable: float  # requests a fleet carries at steady state, over the stable window
    short: float  # the same over the panic window


def target_concurrency(config: AutoscalingConfig, replicas: list[ReplicaRecord]) -> float:
    """What one replica should carry: the configured target when set, else what a replica
    holds (the gateway's ``max_concurrency`` for it)."""
    if "target_concurrency" in config.model_fields_set or not replicas:
        return config.target_concurrency
    return float(max(r.max_concurrency for r in replicas))


def _rate(counters: tuple[tuple[float, int, int, float], ...], now: float, span_s: float) -> float:
    """Arrivals per second over the last ``span_s`` (0 before two samples)."""
    inside = [c for c in counters if now - c[0] <= span_s]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _service_s(
    counters: tuple[tuple[float, int, int, float], ...], last: float | None
) -> float | None:
    """Mean service time of the requests completed over the window; the last known one when
    none completed; None before any."""
    if len(counters) >= 2:
        done = counters[-1][2] - counters[0][2]
        if done > 0:
            return (counters[-1][3] - counters[0][3]) / done
    return last


def _demand(
    samples: tuple[tuple[float, float], ...],
    counters: tuple[tuple[float, int, int, float], ...],
    now: float,
    span_s: float,
    service_s: float | None,
) -> float:
    """Little's law: the requests the arrivals keep in service (rate x mean service time);
    those in service now only before a service time is known. Neither queued requests nor
    the requests in service while a backlog drains are demand: they are the delay of demand
    already counted in the arrivals (counting them held a fleet sized for the backlog a
    whole scale-down delay after it drained)."""
    if service_s is None:
        return _mean(_window(samples, now, span_s))
    return _rate(counters, now, span_s) * service_s


def _cold_start_aware(
    config: AutoscalingConfig,
    desired: int,
    current: int,
    sustained: int,
    queued: int,
    rate: float,
    service_s: float | None,
    unit: float,
    why: str,
) -> tuple[int, int, str]:
    """A queue drives scale-up only when it will still be there when new replicas are
    ready: the capacity running or starting serves ``current x unit / service_s`` requests a
    second; what of the queue and the arrivals it cannot serve within ``cold_start_s`` is
    what new replicas are for. A burst (a need of the short window only, not ``sustained``
    over the stable one) those replicas would only see drained starts none.

    Returns the demand's target, the backlog's (0: none) and the reason. The two are kept
    apart: replicas started for a backlog are let go once it drained, the scale-down delay
    guards estimates of demand, not a queue that was measured and is gone."""
    if current == 0 or service_s is None or service_s <= 0:
        return desired, 0, why
    served = current * unit / service_s
    left = queued + (rate - served) * config.cold_start_s
    if left > 0 and queued > 0:
        extra = math.ceil(left / unit)
        if current + extra > desired:
            why += f"; {queued} queued outlast the cold start: +{extra}"
            return desired, current + extra, why
    if desired > max(current, sustained) and left <= 0 and rate <= served:
        return (
            max(current, sustained),
            0,
            why
            + (
                f"; capacity running or starting drains the queue within "
                f"{config.cold_start_s:g}s cold start"
            ),
        )
    return desired, 0, why


def _apply_backlog(
    target: int, current: int, backlog: int, queued: int, why: str
) -> tuple[int, str]:
    """A queue that outlasts the cold start scales up at once (it is measured, not an
    estimate the up-delay must confirm); while anything is queued nothing is stopped."""
    if backlog > target:
        return backlog, why
    if queued > 0 and target < current:
        return current, why + f"; {queued} queued: nothing stopped"
    return target, why


def _reason_code(target: int, current: int, panic: bool) -> str:
    if target > current:
        return "scale_from_zero" if current == 0 else "panic" if panic else "scale_up"
    if target < current:
        return "scale_to_zero" if target == 0 else "scale_down"
    return "steady"


def _window(
    points: tuple[tuple[float, float], ...],
    now: float,
    span_s: float,
) -> tuple[tuple[float, float], ...]:
    return tuple((t, float(v)) for t, v in points if now - t <= span_s)


def _mean(points: tuple[tuple[float, float], ...]) -> float:
    return sum(v for _, v in points) / len(points) if points else 0.0


def _apply_delays(
    config: AutoscalingConfig,
    proposals: tuple[tuple[float, float], ...],
    now: float,
    first_tick: float,
    current: int,
    desired: int,
    why: str,
) -> tuple[int, str]:
    """Up: the lowest proposal over the up-delay must exceed current. Down: the highest
    proposal over the down-delay is where we go — the lower target must have held. Before
    the policy has run for a whole down-delay, the time it has not seen wants ``current``."""
    if desired > current and current > 0:
        recent = [v for t, v in proposals if now - t <= config.scale_up_delay_s]
        held = int(min(recent))
        if held < desired:
            return max(held, current), why + f"; up held back by {config.scale_up_delay_s:g}s delay"
    if desired < current:
        delay_s = down_delay_s(config)
        recent = [v for t, v in proposals if now - t <= delay_s]
        held = int(max(recent))
        if now - first_tick < delay_s:
            held = max(held, current)
        if held > desired:
            return min(held, current), (
                why + f"; down held at {min(held, current)} by {delay_s:g}s delay"
            )
    return desired, why


def down_delay_s(config: AutoscalingConfig) -> float:
    """How long a lower target must hold: ``scale_down_delay_s``, and never less than a
    cold start. Stopping a replica the demand wants back within a cold start pays the start
    again (in replica-seconds and in requests held through it); keeping an idle replica for
    as long as a start costs is the ski-rental rule, at most twice the cost of knowing the
    future whatever the gaps between bursts."""
    return max(config.scale_down_delay_s, config.cold_start_s)


def idle_timeout_s(config: AutoscalingConfig) -> float:
    """How long without load before scaling to zero: ``idle_timeout_s``, and never less than
    a cold start, for the same reason as ``down_delay_s``."""
    return max(config.idle_timeout_s, config.cold_start_s)


def _apply_zero(
    config: AutoscalingConfig,
    target: int,
    current: int,
    load: float,
    idle_since: float,
    now: float,
    why: str,
) -> tuple[int, str]:
    if current == 0 and load > 0:
        return max(target, 1), why + f"; scale from zero: {load:.0f} requests waiting"
    if target > 0:
        return target, why
    if load > 0:
        return 1, why + "; requests waiting: keep or start one replica"
    if config.min_replicas == 0 and current > 0:
        idle_s = now - idle_since
        if idle_s < idle_timeout_s(config):
            return 1, why + f"; idle {idle_s:.0f}s < idle timeout {idle_timeout_s(config):g}s"
        return 0, why + f"; idle {idle_s:.0f}s: scale to zero"
    return target, why


def _apply_bounds(
    config: AutoscalingConfig, target: int, current: int, why: str
) -> tuple[int, str]:
    if target > current:
        if current == 0:
            limit = max(1, math.ceil(config.max_scale_up_rate))
        else:
            limit = math.ceil(current * config.max_scale_up_rate)
        if target > limit:
            target, why = limit, why + f"; up rate limit {limit}"
    elif target < current:
        limit = math.floor(current / config.max_scale_down_rate)
        if target < limit:
            target, why = limit, why + f"; down rate limit {limit}"
    if target > config.max_replicas:
        target, why = config.max_replicas, why + f"; max_replicas {config.max_replicas}"
    if target < config.min_replicas:
        target, why = config.min_replicas, why + f"; min_replicas {config.min_replicas}"
    return target, why


def _never_ready(config: AutoscalingConfig, snapshot: AutoscalingSnapshot) -> tuple[str, ...]:
    return tuple(
        r.replica_id
        for r in snapshot.replicas
        if overdue(r, snapshot.now_s, config.startup_timeout_s) is not None
    )


def choose_victims(replicas: list[ReplicaRecord], count: int) -> tuple[str, ...]:
    """Whom to stop: starting replicas first (no request is lost and they cost a cold
    start anyway; the newest first), then ready ones with the fewest requests in flight,
    because they finish draining soonest."""
    if count <= 0:
        return ()
    starting = sorted((r for r in replicas if r.state in _STARTING), key=lambda r: -r.state_since_s)
    ready = sorted(
        (r for r in replicas if r.state is ReplicaState.READY),
        key=lambda r: (r.in_flight, -r.state_since_s),
    )
    return tuple(r.replica_id for r in [*starting, *ready][:count])
