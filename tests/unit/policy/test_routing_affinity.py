"""Queue-aware prefix affinity, the KV-capacity-sized prefix index and the pace book.

Figures are hand-computed with round numbers: 16-token blocks, a prefill of 1 ms a token
(``prefill_us_per_token=1000``), 4 slots a replica, a 1,700-token prompt of which 100 blocks
(1,600 tokens) are hashed.
"""

from __future__ import annotations

import pytest

from shipit.config.gateway import PrefixCacheConfig, QueueingConfig, RoutingConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy import admission
from shipit.policy.routing import (
    PaceBook,
    PrefixIndex,
    ReplicaPace,
    RouteDecision,
    RoutePlan,
    RouteSnapshot,
    RoutingState,
    computed_tokens,
    decide,
    observe,
    plan_for,
    prefix_hits,
)

HASHES = tuple(range(1000, 1100))  # 100 blocks
CONFIG = RoutingConfig(
    policy="prefix_cache",
    prefix_cache=PrefixCacheConfig(
        prefill_us_per_token=1000.0, max_affinity_wait_s=2.0, token_imbalance_ratio=1.0
    ),
)
PLAN = plan_for("prefix_cache", CONFIG)
SLACK = plan_for(
    "prefix_cache",
    RoutingConfig(
        policy="prefix_cache",
        prefix_cache=PrefixCacheConfig(
            prefill_us_per_token=1000.0, token_imbalance_ratio=1.3, max_affinity_wait_s=2.0
        ),
    ),
)


def rep(rid: str, in_flight: int = 0) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=4)


def req(arrived_s: float = 0.0, **kw: object) -> RequestView:
    return RequestView(
        request_id="q",
        deployment="d",
        model="m",
        prefix_hashes=HASHES,
        prompt_tokens_estimate=1700,
        arrived_s=arrived_s,
        **kw,  # type: ignore[arg-type]
    )


def route(
    fleet: tuple[ReplicaRecord, ...],
    paces: tuple[ReplicaPace, ...],
    *,
    hits: tuple[tuple[str, int], ...] = (("a", 100),),
    now: float = 0.0,
    request: RequestView | None = None,
    holding_since_s: float | None = None,
    plan: RoutePlan = PLAN,
) -> RouteDecision:
    snapshot = RouteSnapshot(
        now, request or req(), fleet, hits, paces=paces, holding_since_s=holding_since_s
    )
    decision, state = decide(plan, snapshot, RoutingState(turn=3))
    if decision.replica_id is None:
        assert state == RoutingState(turn=3)  # waiting changes nothing
    return decision


def test_waits_for_a_full_holder_when_its_first_token_comes_sooner() -> None:
    # a: slot in (1 waiting + 1) x 2.0 s / 4 slots = 1.0 s; first token 1.0 + 100 x 1 ms = 1.1 s.
    # b recomputes all 1,700 tokens: 1.7 s.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 0, 1), ReplicaPace("b", 2.0)))
    assert (d.replica_id, d.reason_code, d.wait_for) == (None, "wait_for_holder", "a")
    assert d.prefix_hit_blocks == 100
    assert "slot in ~1.00 s" in d.reason and "~1.10 s there vs ~1.70 s on b" in d.reason
    assert "prefill saved 1.60 s" in d.reason


def test_waits_while_the_holder_is_later_by_less_than_its_slots_x_the_prefill_saved() -> None:
    # 3 already wait for a: slot in 4 x 2.0 / 4 = 2.0 s, first token 2.1 s, over the slack
    # (1x) of b's 1.7 s; but 0.4 s later is within b's 4 slots x the 1.6 s of prefill it would
    # redo (the recomputation holds back every request sharing b's steps): wait.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 0, 3), ReplicaPace("b", 2.0)))
    assert (d.replica_id, d.reason_code, d.wait_for) == (None, "wait_for_holder", "a")
    assert "~2.10 s there vs ~1.70 s on b" in d.reason
    assert "0.40 s later there, within 4 x the 1.60 s of prefill b would redo" in d.reason
    # 8,000 tokens queued at a: 8.0 + 0.1 = 8.1 s, 6.4 s later = 4 x 1.6 s: still waits.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 8000), ReplicaPace("b", 2.0)))
    assert d.reason_code == "wait_for_holder"
    # 8,100: 6.5 s later, over 4 x 1.6 s: b.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 8100), ReplicaPace("b", 2.0)))
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")
    assert "over 1x later, and 6.50 s later is over 4 x the prefill saved" in d.reason


def test_a_replicas_measured_prefill_pace_times_its_tokens() -> None:
    # As above, but b computes at its measured 2 ms a token: 3.4 s there, 2.1 s at a: wait.
    paces = (ReplicaPace("a", 2.0, 0, 3), ReplicaPace("b", 2.0, prefill_s_per_token=0.002))
    d = route((rep("a", 4), rep("b")), paces)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    assert "~2.10 s there vs ~3.40 s on b" in d.reason


def test_the_holder_keeps_its_request_within_the_token_imbalance_slack() -> None:
    # Slack 1.3: 2.1 s at a < 1.3 x 1.7 s = 2.21 s on b: wait for a.
    paces = (ReplicaPace("a", 2.0, 0, 3), ReplicaPace("b", 2.0))
    d = route((rep("a", 4), rep("b")), paces, plan=SLACK)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    # The slack alone decides when b would redo little: b holds 99 blocks (16 tokens to redo,
    # 4 x 0.016 s) but has 3,000 tokens queued: 3,116 tokens, 3.116 s; 1.3 x = 4.05 s.
    # a with 3,900 queued: 3.9 + 0.1 = 4.0 s: wait; with 4,000: 4.1 s: b.
    hits = (("a", 100), ("b", 99))
    paces = (ReplicaPace("a", 2.0, 3900), ReplicaPace("b", 2.0, 3000))
    d = route((rep("a", 4), rep("b")), paces, hits=hits, plan=SLACK)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    paces = (ReplicaPace("a", 2.0, 4000), ReplicaPace("b", 2.0, 3000))
    d = route((rep("a", 4), rep("b")), paces, hits=hits, plan=SLACK)
    assert (d.replica_id, d.reason_code, d.prefix_hit_blocks) == ("b", "holder_busy", 99)
    assert "over 1.3x later" in d.reason
    # A free holder: 2,300 tokens vs 1,700 on b; 2,300 < 1.3 x 1,700 = 2,210? No: passed over.
    paces = (ReplicaPace("a", 2.0, 2200), ReplicaPace("b", 2.0))
    assert route((rep("a", 1), rep("b", 1)), paces, plan=SLACK).reason_code == "imbalance_guard"
    # 2,100 tokens <= 2,210: kept.
    paces = (ReplicaPace("a", 2.0, 2000), ReplicaPace("b", 2.0))
    assert route((rep("a", 1), rep("b", 1)), paces, plan=SLACK).reason_code == "prefix_hit"


def test_equal_holders_go_by_tokens_to_compute_not_requests_in_flight() -> None:
    # a and b hold the same 100 blocks (a prefix every prompt shares). a carries fewer
    # requests but has 20 tokens to compute, b none: 120 vs 100 tokens is within the guard's
    # slack (1.3), which would keep a; as both hold the prefix, b, with fewer tokens, takes it
    # (always picking the fewer requests let the holders drift apart by the slack in tokens).
    paces = (ReplicaPace("a", 2.0, 20), ReplicaPace("b", 2.0, 0))
    d = route((rep("a", 1), rep("b", 2)), paces, hits=(("a", 100), ("b", 100)), plan=SLACK)
    assert (d.replica_id, d.reason_code, d.prefix_hit_blocks) == ("b", "prefix_hit", 100)


def test_the_holder_backlog_counts_against_waiting() -> None:
    # Slot in 1.0 s, but a has 1,800 tokens pending: first token max(1.0, 1.8) + 0.1 = 1.9 s.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 1800, 1), ReplicaPace("b", 2.0)))
    assert "~1.90 s there" in d.reason
    # With 8,100 pending: 8.2 s, later than b by over 4 x the 1.6 s saved: b.
    d = route((rep("a", 4), rep("b")), (ReplicaPace("a", 2.0, 8100, 1), ReplicaPace("b", 2.0)))
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")
    assert "~8.20 s there" in d.reason


def test_the_wait_for_the_holder_is_bounded_from_when_it_began() -> None:
    paces = (ReplicaPace("a", 2.0, 0, 1), ReplicaPace("b", 2.0))
    # Held for the holder since 10.0, now 13.6: 3.6 + 1.0 s slot wait is 2.6 s past the 2.0 s
    # bound, over twice it; the holder's 1.1 s + 2.6 s is no sooner than b's 1.7 s: go.
    d = route((rep("a", 4), rep("b")), paces, now=13.6, holding_since_s=10.0)
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")
    assert "waited 3.60 s, bound 2 s, not sooner there" in d.reason
    d = route((rep("a", 4), rep("b")), paces, now=10.9, holding_since_s=10.0)
    assert d.reason_code == "wait_for_holder"  # 0.9 + 1.0 <= 2.0
    assert "waited 0.90 s of 2 s" in d.reason
    # Time queued before it had a holder to wait for does not count.
    d = route((rep("a", 4), rep("b")), paces, now=30.0, request=req(arrived_s=0.0))
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")


def test_past_the_bound_it_waits_on_while_sooner_or_within_twice_it_while_worth_it() -> None:
    paces = (ReplicaPace("a", 2.0, 0, 1), ReplicaPace("b", 2.0))
    # Since 10.0, now 11.5: 0.5 s past the bound; 1.1 + 0.5 = 1.6 s at a < 1.7 s on b: going
    # to b would make the first token later and recompute the prefix: wait on.
    d = route((rep("a", 4), rep("b")), paces, now=11.5, holding_since_s=10.0)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    assert "0.50 s past the 2 s bound" in d.reason and "still sooner there" in d.reason
    # Now 11.8: 0.8 s past it, 1.9 s no sooner than 1.7 s; but within twice the bound and
    # 1.1 s at a is within 4 x the 1.6 s of prefill b would redo: wait on.
    d = route((rep("a", 4), rep("b")), paces, now=11.8, holding_since_s=10.0)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    assert "0.80 s past the 2 s bound" in d.reason and "within 4 x the 1.60 s" in d.reason
    # Worth it only by the slack (b redoes 16 tokens, has 3,000 queued; slack 1.3): waits
    # within the bound (0 + 1.0 s slot wait), goes once past it.
    hits = (("a", 100), ("b", 99))
    slow = (ReplicaPace("a", 2.0, 3900, 1), ReplicaPace("b", 2.0, 3000))
    d = route((rep("a", 4), rep("b")), slow, hits=hits, plan=SLACK)
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")
    d = route((rep("a", 4), rep("b")), slow, hits=hits, now=11.1, holding_since_s=10.0, plan=SLACK)
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")
    # A bound of 0 never waits, sooner or not.
    never = plan_for(
        "prefix_cache",
        RoutingConfig(
            policy="prefix_cache",
            prefix_cache=PrefixCacheConfig(prefill_us_per_token=1000.0, max_affinity_wait_s=0.0),
        ),
    )
    d = route((rep("a", 4), rep("b")), paces, plan=never)
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")


def test_an_unmeasured_holder_is_not_waited_for_and_the_reason_says_so() -> None:
    d = route((rep("a", 4), rep("b")), (ReplicaPace("b", 2.0),))
    assert (d.replica_id, d.reason_code) == ("b", "holder_busy")
    assert "a holds 100/100 blocks but is full (4/4)" in d.reason
    assert "not measured" in d.reason


def test_a_holder_with_a_free_slot_is_passed_over_when_its_backlog_costs_more() -> None:
    # a: 3,000 pending + 100 uncached = 3,100 tokens; b: 0 + 1,700. b is sooner.
    paces = (ReplicaPace("a", 2.0, 3000), ReplicaPace("b", 2.0))
    d = route((rep("a", 1), rep("b", 1)), paces)
    assert (d.replica_id, d.reason_code) == ("b", "imbalance_guard")
    assert "3100 tokens" in d.reason and "b 1700" in d.reason and "ratio > 1)" in d.reason
    # a: 1,000 + 100 = 1,100 < 1,700: the prefix wins.
    paces = (ReplicaPace("a", 2.0, 1000), ReplicaPace("b", 2.0))
    d = route((rep("a", 1), rep("b", 1)), paces)
    assert (d.replica_id, d.reason_code, d.prefix_hit_blocks) == ("a", "prefix_hit", 100)


def test_without_a_match_the_fewest_tokens_to_compute_wins_not_the_fewest_requests() -> None:
    # a carries fewer requests but more tokens: 500 vs 200.
    paces = (ReplicaPace("a", 1.0, 500), ReplicaPace("b", 1.0, 200))
    d = route((rep("a", 0), rep("b", 2)), paces, hits=())
    assert (d.replica_id, d.reason_code) == ("b", "no_prefix_match")
    assert "fewest to compute" in d.reason


def test_a_partial_holder_with_a_slot_competes_with_waiting_for_the_full_one() -> None:
    # b holds 95 blocks: 180 tokens to compute = 0.18 s, a's 1.1 s is 0.92 s later, over the
    # 4 x 0.08 s of prefill b would redo: go to b.
    paces = (ReplicaPace("a", 2.0, 0, 1), ReplicaPace("b", 2.0), ReplicaPace("c", 2.0))
    d = route((rep("a", 4), rep("b"), rep("c")), paces, hits=(("a", 100), ("b", 95)))
    assert (d.replica_id, d.reason_code, d.prefix_hit_blocks) == ("b", "holder_busy", 95)
    # b holds 50: 0.9 s there, 0.2 s sooner than a, but a saves 4 x 0.8 s: wait for a.
    d = route((rep("a", 4), rep("b"), rep("c")), paces, hits=(("a", 100), ("b", 50)))
    assert (d.reason_code, d.wait_for) == ("wait_for_holder", "a")


def test_waiters_of_a_lower_priority_do_not_take_a_slot_a_held_waiter_let_go() -> None:
    q = QueueingConfig()
    state = admission.QueueState()
    for rid, prio in (("hi", 0), ("lo", 1), ("hi2", 0)):
        offer = admission.OfferSnapshot(0.0, rid, prio, None, frozenset(), 2)
        _, state = admission.offer(q, offer, state)
    fleet = (rep("a", 4), rep("b", 1))
    snap = admission.DispatchSnapshot(0.0, fleet, frozenset({"hi"}), held_priority=0)
    decision, _ = admission.dispatch(q, snap, state)
    assert decision.entry is not None and decision.entry.request_id == "hi2"
    snap = admission.DispatchSnapshot(0.0, fleet, frozenset({"hi", "hi2"}), held_priority=0)
    decision, _ = admission.dispatch(q, snap, state)
    assert decision.entry is None and "1 of a lower priority" in decision.reason
    # Without a held waiter the lower class takes the slot.
    snap = admission.DispatchSnapshot(0.0, fleet, frozenset({"hi", "hi2"}))
    decision, _ = admission.dispatch(q, snap, state)
    assert decision.entry is not None and decision.entry.request_id == "lo"


# ----- the index -------------------------------------------------------------------------------
def test_the_index_holds_what_the_reported_kv_capacity_holds() -> None:
    index = PrefixIndex(max_blocks_per_replica=1000)
    index.set_capacity("a", 4)
    index.record("a", [1, 2, 3])
    assert index.match_blocks("a", [1, 2, 3]) == 3
    # 6 blocks in a 4-block cache: the first prompt's tail (3, then 2) is evicted first, as
    # the replica frees a sequence's blocks tail first.
    index.record("a", [7, 8, 9])
    assert index.size("a") == 4
    assert index.match_blocks("a", [1, 2, 3]) == 1
    assert index.match_blocks("a", [7, 8, 9]) == 3


def test_output_and_tail_blocks_take_space_in_the_index() -> None:
    index = PrefixIndex(max_blocks_per_replica=1000)
    index.set_capacity("a", 4)
    index.record("a", [1, 2], extra_blocks=3)  # 5 blocks: an output block goes first
    assert (index.match_blocks("a", [1, 2]), index.size("a")) == (2, 4)
    index.record("a", [5, 6])  # the other two output blocks go
    assert index.match_blocks("a", [1, 2]) == 2
    index.record("a", [7])  # then the prompt, from its tail
    assert index.match_blocks("a", [1, 2]) == 1


def test_shrinking_the_capacity_drops_the_oldest_blocks() -> None:
    index = PrefixIndex(max_blocks_per_replica=10)
    index.record("a", [1, 2, 3, 4])
    index.set_capacity("a", 2)  # the oldest: the prompt's tail
    assert (index.match_blocks("a", [1, 2]), index.match_blocks("a", [3, 4])) == (2, 0)
    with pytest.raises(ValueError, match="got 0"):
        index.set_capacity("a", 0)


def test_a_stale_holder_is_no_longer_routed_to() -> None:
    plan = plan_for("prefix_cache", RoutingConfig())
    index = PrefixIndex(max_blocks_per_replica=200_000)
    index.set_capacity("a", 6)
    index.set_capacity("b", 6)
    fleet = (rep("a", 1), rep("b", 0))
    old = RequestView(request_id="1", deployment="d", model="m", prefix_hashes=(1, 2, 3, 4))

    def route_one(request: RequestView) -> RouteDecision:
        hits = prefix_hits(index, request.prefix_hashes, ["a", "b"])
        d, _ = decide(plan, RouteSnapshot(0.0, request, fleet, hits), RoutingState())
        return d

    index.record("a", old.prefix_hashes)
    first = route_one(old)
    assert (first.replica_id, first.reason_code) == ("a", "prefix_hit")
    # a then serves another prompt of 6 blocks: its 6-block cache keeps nothing of old.
    new = RequestView(request_id="2", deployment="d", model="m", prefix_hashes=(5, 6, 7, 8, 9, 10))
    observe(plan, new, RouteDecision("a", "prefix_cache", "prefix_hit", ""), index)
    again = route_one(old)
    assert (again.replica_id, again.reason_code) == ("b", "no_prefix_match")


# ----- the pace book ---------------------------------------------------------------------------
def test_the_pace_book_tracks_backlog_service_time_and_waiters() -> None:
    book = PaceBook()  # no pace: a prompt counts whole until its first token
    book.placed("a", "q1", 1700, now_s=0.0)
    book.placed("a", "q2", 100, now_s=0.0)
    book.done("a", "q1", 2.0, now_s=2.0)
    book.done("b", "q9", None, now_s=2.0)  # a failed attempt: no service time
    book.waits("q3", "a", 5.0)
    book.waits("q4", "a", 6.0)
    book.waits("q3", "a", 7.0)  # still holding since 5.0
    assert (book.holding_since("q3"), book.holding_since("q4")) == (5.0, 6.0)
    assert book.paces(["a", "b"], now_s=7.0, asking="q3") == (
        ReplicaPace("a", 2.0, 100, 1),
        ReplicaPace("b", 0.0, 0, 0),
    )
    book.done("a", "q2", 4.0, now_s=8.0)  # 2.0 + 0.2 x (4.0 - 2.0) = 2.4
    book.placed("b", "q4", 5, now_s=8.0)  # q4 placed: no longer waits
    assert book.holding_since("q4") is None
    assert book.paces(["a"], now_s=8.0) == (ReplicaPace("a", pytest.approx(2.4), 0, 1),)  # type: ignore[arg-type]
    book.forget("a")
    assert book.paces(["a"], now_s=8.0) == (ReplicaPace("a", 0.0, 0, 0),)


def test_computed_tokens_take_the_cached_prefix_off_the_prompt() -> None:
    cfg = PrefixCacheConfig()
    decision = RouteDecision("a", "prefix_cache", "prefix_hit", "", prefix_hit_blocks=100)
    assert computed_tokens(cfg, req(), decision) == 1700 - 1600
    short = RequestView(request_id="q", deployment="d", model="m", prefix_hashes=(1, 2))
    assert computed_tokens(cfg, short, RouteDecision("a", "p", "c", "")) == 32


def test_a_first_token_takes_the_prompt_off_the_backlog_once() -> None:
    book = PaceBook()
    book.placed("a", "q1", 1000, now_s=0.0)
    book.placed("a", "q2", 300, now_s=0.0)
    book.prefilled("a", "q1", now_s=1.0)  # q1's first token
    assert book.pending_tokens("a", 1.0) == 300
    book.done("a", "q1", 1.0, now_s=2.0)  # q1 ends: nothing more to take off
    assert book.pending_tokens("a", 2.0) == 300
    book.done("a", "q2", 1.0, now_s=2.0)  # q2 ends without a first token (aborted before it)
    assert book.pending_tokens("a", 2.0) == 0


def test_the_default_slack_keeps_a_follow_up_on_its_holder_up_to_3x_later() -> None:
    # The default configuration (token_imbalance_ratio 3): on a saturated trace a recomputed
    # 20k-token prefix costs the fleet more than waiting costs this request, so the holder
    # keeps it while its first token is within 3x the alternative's.
    default = plan_for(
        "prefix_cache",
        RoutingConfig(
            policy="prefix_cache", prefix_cache=PrefixCacheConfig(prefill_us_per_token=1000.0)
        ),
    )
    book = PaceBook(prefill_s_per_token=0.001)
    book.placed("a", "q1", 4500, now_s=0.0)  # a long prompt, computed at 1 ms a token
    book.done("a", "q0", 2.0, now_s=0.0)
    book.done("b", "q9", 2.0, now_s=0.0)
    # At 0.4 s a has 4,100 tokens to go: full, first token ~max(0.5, 4.1) + 0.1 = 4.2 s there
    # vs 1.7 s on b (2.5x): waits under the default slack, went to b under 2.
    paces = book.paces(["a", "b"], now_s=0.4)
    assert paces[0].pending_tokens == 4100
    d = route((rep("a", 4), rep("b")), paces, now=0.4, plan=default)
    assert (d.replica_id, d.reason_code, d.wait_for) == (None, "wait_for_holder", "a")
    assert "~4.20 s there vs ~1.70 s on b" in d.reason
    # With a free slot the token guard keeps it too: 4,100 + 100 tokens vs 1,700 (2.5x).
    d = route((rep("a", 3), rep("b")), paces, now=0.4, plan=default)
    assert (d.replica_id, d.reason_code) == ("a", "prefix_hit")
    # Past 3x it goes: with 1,000 more tokens queued there, 5,200 vs 1,700 (3.06x): b.
    book.placed("a", "q2", 1000, now_s=0.4)
    paces = book.paces(["a", "b"], now_s=0.4)
    d = route((rep("a", 3), rep("b")), paces, now=0.4, plan=default)
    assert (d.replica_id, d.reason_code) == ("b", "imbalance_guard")
    assert "ratio > 3)" in d.reason


def test_the_default_bound_keeps_a_saturated_fleets_conversation_on_its_holder() -> None:
    """The default bound (8 s): on a full fleet, 3.6 s into the wait with a slot ~1 s away, the
    holder still gives the first token in 1.1 s against 1.7 s elsewhere: wait on. Under the
    old default of 2 s the same request left and recomputed its 1,600 cached tokens."""
    paces = (ReplicaPace("a", 2.0, 0, 1), ReplicaPace("b", 2.0))
    fleet = (rep("a", 4), rep("b"))
    default = PrefixCacheConfig(prefill_us_per_token=1000.0)
    old = default.model_copy(update={"max_affinity_wait_s": 2.0})
    for pc, code in ((default, "wait_for_holder"), (old, "holder_busy")):
        plan = plan_for("prefix_cache", RoutingConfig(policy="prefix_cache", prefix_cache=pc))
        d = route(fleet, paces, now=13.6, holding_since_s=10.0, plan=plan)
        assert d.reason_code == code, d.reason
        if pc is default:
            assert "waited 3.60 s of 8 s" in d.reason
