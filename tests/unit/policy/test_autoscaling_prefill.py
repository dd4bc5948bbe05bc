"""The prefill demand rule as tick sequences: long prompts need replicas for their prefill,
which request concurrency does not see.

Figures: 3 requests a second of 8 s each (Little's law: 24 in service, one replica at a target
of 16 x 0.7 = 11.2 carries them in ceil(24 / 11.2) = 3 replicas); their prompts' prefill alone
is 0.6 s each (12,000-token prompts), 1.8 s of prefill arriving a second: at
``prefill_utilization`` 0.5 that is ceil(1.8 / 0.5) = 4 replicas. Counters as the gateway
counts them; no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipit.config.autoscaling import AutoscalingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.policy.autoscaling import AutoscalingSnapshot, AutoscalingState, ScaleDecision, decide


def ready(n: int, in_flight: int = 8) -> tuple[ReplicaRecord, ...]:
    return tuple(
        ReplicaRecord(
            f"r{i}",
            f"http://r{i}",
            state=ReplicaState.READY,
            in_flight=in_flight,
            max_concurrency=16,
        )
        for i in range(n)
    )


@dataclass
class Traffic:
    config: AutoscalingConfig
    prefill_each_s: float
    state: AutoscalingState = field(default_factory=AutoscalingState)
    arrivals: int = 0
    completed: int = 0
    service_s: float = 0.0
    prefill_s: float = 0.0
    now: int = 0

    def run(self, seconds: int, replicas: tuple[ReplicaRecord, ...]) -> ScaleDecision:
        """One tick a second at 3 arrivals and 3 completions of 8 s a second."""
        decision = None
        for _ in range(seconds):
            self.now += 1
            self.arrivals += 3
            self.completed += 3
            self.service_s += 3 * 8.0
            self.prefill_s += 3 * self.prefill_each_s
            snap = AutoscalingSnapshot(
                float(self.now),
                replicas,
                0,
                self.arrivals,
                self.completed,
                self.service_s,
                prefill_s=self.prefill_s,
            )
            decision, self.state = decide(self.config, snap, self.state)
        assert decision is not None
        return decision


def cfg(**kw: object) -> AutoscalingConfig:
    base: dict[str, object] = {"min_replicas": 1, "max_replicas": 20, "cold_start_s": 30}
    return AutoscalingConfig.model_validate(base | kw)


def test_long_prompts_scale_for_their_prefill_not_their_request_count() -> None:
    d = Traffic(cfg(), prefill_each_s=0.6).run(60, ready(3))
    assert (d.target, d.reason_code) == (4, "scale_up")
    assert "; prefill 1.80 replica-s/s / 0.5 -> 4" in d.reason


def test_short_prompts_are_sized_by_request_concurrency_as_before() -> None:
    # 512-token prompts: 15 ms of prefill each, 0.045 s a second, 1 replica: Little's law's 3.
    d = Traffic(cfg(), prefill_each_s=0.015).run(60, ready(3))
    assert (d.target, d.reason_code) == (3, "steady")
    assert "prefill" not in d.reason


def test_a_lower_prefill_utilization_asks_for_more_replicas() -> None:
    d = Traffic(cfg(prefill_utilization=0.3), prefill_each_s=0.6).run(60, ready(3))
    assert d.target == 6  # ceil(1.8 / 0.3)


def test_the_rule_is_off_with_prefill_utilization_null_or_nothing_counted() -> None:
    off = Traffic(cfg(prefill_utilization=None), prefill_each_s=0.6).run(60, ready(3))
    assert (off.target, off.reason_code) == (3, "steady")
    uncounted = Traffic(cfg(), prefill_each_s=0.0).run(60, ready(3))
    assert (uncounted.target, uncounted.reason_code) == (3, "steady")


def test_prefill_need_outlasts_a_lull_in_the_scale_down_delay() -> None:
    # The prefill-sized fleet is a proposal like any other: the delay keeps it.
    t = Traffic(cfg(scale_down_delay_s=120), prefill_each_s=0.6)
    assert t.run(60, ready(3)).target == 4
    t.prefill_each_s = 0.015
    d = t.run(30, ready(4))
    assert (d.target, d.reason_code) == (4, "steady")
    assert "down held at 4" in d.reason


def test_a_clump_between_two_close_ticks_is_not_read_as_tens_of_replicas() -> None:
    # From zero: a tick, then the tick a held request wakes 0.05 s later, after 16 prompts of
    # 0.6 s prefill each arrived at once (9.6 s of prefill). Over 0.05 s that read as 192
    # prefill seconds a second (384 replicas); over the 6 s panic window it is 1.6 (4).
    config = cfg(min_replicas=0, max_scale_up_rate=1000)
    state = AutoscalingState()
    for now, prefill, queued in ((0.0, 0.0, 0), (0.05, 9.6, 16)):
        snap = AutoscalingSnapshot(now, (), queued, arrivals=16 if now else 0, prefill_s=prefill)
        d, state = decide(config, snap, state)
    assert d.target == 4
    assert "; prefill 1.60 replica-s/s / 0.5 -> 4" in d.reason
